"""Reads of the change feed: rows above a sequence, rows by key, the feed's snapshot.

Every read-model row carries ``updated_seq`` (one sequence for all tables,
taken when the row is written). The feed reads, per changed table, the rows
above the last sequence it delivered, in pages of FEED_PAGE_ROWS, in
``updated_seq`` order, plus the rows of transactions that were still running
when it last read (they may hold lower sequences than rows that committed
first): see ``api.cursor``. Each such read is one statement that also returns
its own snapshot (``_snapshot``, ``_foreign``) and the table's oid (``_oid``),
so a read costs one round trip. These statements want an index on
``updated_seq`` of each table they read (the projections' migrations index it).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.db import table
from api.sql import daily_sales, order_summary

FEED_PAGE_ROWS = 1_000


@dataclass(frozen=True, slots=True)
class FeedTable:
    """A read table subscribers can watch.

    ``key``: its key column. ``owner``: the column naming the customer who may
    see a row (None: admins only). ``status``: a status column whose changes
    are tracked. ``small``: after a rebuild swapped it, subscribers watching
    all its rows get them all again (otherwise they are asked to re-query).
    """

    name: str
    key: str
    columns: str
    owner: str | None = None
    status: str | None = None
    small: bool = False

    @property
    def since(self) -> str:
        """The head, then rows above $1 that are above $2 or written by one of the
        transactions $3 at or below its bound in $4, a page ($5); no rows: one row of
        the head and nulls."""
        return (f"SELECT h.*, r.* FROM ({_head(self.name)}) AS h LEFT JOIN LATERAL ("
                f"SELECT {self.columns}, updated_seq FROM {table(self.name)} "
                "WHERE updated_seq > $1 AND (updated_seq > $2 OR EXISTS (SELECT 1 FROM "
                "unnest($3::bigint[], $4::bigint[]) AS s(x, h) WHERE xmin::text::bigint = s.x "
                "AND updated_seq <= s.h)) ORDER BY updated_seq LIMIT $5) AS r ON true")

    @property
    def newest(self) -> str:
        """The head and the highest sequence above $1 (``_newest``, null if none): moves the
        cursor when nobody watches."""
        return (f"SELECT h.*, (SELECT max(updated_seq) FROM {table(self.name)} WHERE updated_seq > $1)"
                f" AS _newest FROM ({_head(self.name)}) AS h")

    @property
    def top(self) -> str:
        return f"SELECT coalesce(max(updated_seq), 0) FROM {table(self.name)}"

    def keyed(self, *, owners: bool, after: bool) -> str:
        """Rows whose key is in $1 (or owner in $2), by key, a page; ``after``: keys above $3."""
        where = f"{self.key} = ANY($1)"
        if owners and self.owner is not None:
            where = f"({where} OR {self.owner} = ANY($2))"
        n = 3 if owners and self.owner is not None else 2
        if after:
            where += f" AND {self.key} > ${n}"
            n += 1
        return (f"SELECT {self.columns}, updated_seq FROM {table(self.name)} WHERE {where} "
                f"ORDER BY {self.key} LIMIT ${n}")

    def every(self, *, after: bool) -> str:
        """All rows by key, a page ($1 or $2); ``after``: keys above $1."""
        where = f" WHERE {self.key} > $1" if after else ""
        limit = "$2" if after else "$1"
        return (f"SELECT {self.columns}, updated_seq FROM {table(self.name)}{where} "
                f"ORDER BY {self.key} LIMIT {limit}")


ORDERS = FeedTable(order_summary.ORDER_SUMMARY, "order_id", order_summary.COLUMNS,
                   owner="customer_id", status="status")
DAYS = FeedTable(daily_sales.DAILY_SALES, "day", daily_sales.COLUMNS, small=True)
FEED_TABLES: dict[str, FeedTable] = {t.name: t for t in (ORDERS, DAYS)}


# Columns of the head of a read: not row data.
HEAD = ("_snapshot", "_foreign", "_oid")


def _head(name: str) -> str:
    return ("SELECT pg_current_snapshot()::text AS _snapshot,"
            " (SELECT coalesce(array_agg(backend_xid::text::bigint), '{}') FROM pg_stat_activity"
            "  WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()) AS _foreign,"
            f" to_regclass('{table(name)}')::oid::bigint AS _oid")


def snapshot_sql(tables: tuple[str, ...]) -> str:
    """The round's snapshot; the in-progress transaction ids of *other* databases
    (never writers of our tables); the tables' current oids (a rebuild swap renames)."""
    oids = ", ".join(f"to_regclass('{table(t)}')::oid" for t in tables)
    return ("SELECT pg_current_snapshot()::text AS snapshot,"
            " (SELECT coalesce(array_agg(backend_xid::text::bigint), '{}') FROM pg_stat_activity"
            "  WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()) AS foreign,"
            f" ARRAY[{oids}]::bigint[] AS oids")
