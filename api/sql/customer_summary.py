"""Reads of ``customer_summary``: customers by id and pages of customers."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from api.auth import Viewer
from api.db import ReadDb, Sql, Where, table
from api.pagination import Ordering, Page, Window, fetch_limit, keyset, page
from api.sql import restrict

CUSTOMER_SUMMARY = "customer_summary"

COLUMNS = ("customer_id, order_count, paid_order_count, cancelled_order_count, total_spent, "
           "first_order_at, last_order_at")

# Index (total_spent DESC, customer_id), and the primary key.
TOTAL_SPENT_DESC = Ordering("customers.total_spent_desc",
                            (("total_spent", True), ("customer_id", False)), (Decimal, str))
CUSTOMER_ID_ASC = Ordering("customers.customer_id_asc", (("customer_id", False),), (str,))


async def by_ids(db: ReadDb, viewer: Viewer, customer_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """The customers among ``customer_ids`` the viewer may see, by id, in one statement."""
    where = Where(list(customer_ids))
    where.add("customer_id = ANY($1::text[])")
    restrict(where, viewer)
    text = f"SELECT {COLUMNS} FROM {table(CUSTOMER_SUMMARY)}{where.sql()}"
    return {r["customer_id"]: r for r in await db.fetch(Sql(text, (CUSTOMER_SUMMARY,)), *where.args)}


async def page_of(db: ReadDb, viewer: Viewer, ordering: Ordering, win: Window) -> Page[asyncpg.Record]:
    """One page of the customers the viewer may see, in ``ordering``."""
    where = Where()
    restrict(where, viewer)
    keyset(where, ordering, win)
    limit = where.param(fetch_limit(win))
    text = (f"SELECT {COLUMNS} FROM {table(CUSTOMER_SUMMARY)}{where.sql()} "
            f"ORDER BY {ordering.order_by(win.backward)} LIMIT {limit}")
    return page(await db.fetch(Sql(text, (CUSTOMER_SUMMARY,)), *where.args), win)


async def count(db: ReadDb, viewer: Viewer) -> int:
    """How many customers the viewer may see."""
    where = Where()
    restrict(where, viewer)
    text = f"SELECT count(*) FROM {table(CUSTOMER_SUMMARY)}{where.sql()}"
    row = await db.fetchrow(Sql(text, (CUSTOMER_SUMMARY,)), *where.args)
    return int(row[0]) if row is not None else 0
