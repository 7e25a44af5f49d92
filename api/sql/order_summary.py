"""Reads of ``order_summary``: one order, pages of orders, and per-customer pages.

Lists show only orders whose OrderPlaced is known (``placed_at IS NOT NULL``):
an order known only from later events has no customer, total or placing time
yet, and so no place in an ordering by them. Such an order is still readable by
id (by an admin; a customer's own orders all have a customer_id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from api.auth import Viewer
from api.db import ReadDb, Sql, Where, table
from api.pagination import Ordering, Page, Window, fetch_limit, keyset, page
from api.sql import restrict, status_clause

ORDER_SUMMARY = "order_summary"

# Not event_ids / merge_state: the engine's bookkeeping, large, never shown.
COLUMNS = (
    "order_id, customer_id, status, items, item_count, total_amount, currency, placed_at, "
    "inventory_reserved_at, paid_at, shipping_scheduled_at, shipped_at, delivered_at, "
    "cancelled_at, refunded_at, failed_at, failure_reason, carrier, tracking_number, "
    "paid_amount, refunded_amount, last_event_at, event_count"
)

# Each matches an index: (placed_at DESC, order_id), read backwards for ASC;
# (total_amount DESC, order_id); (customer_id, placed_at DESC, order_id);
# (status, placed_at DESC, order_id).
PLACED_AT_DESC = Ordering("orders.placed_at_desc", (("placed_at", True), ("order_id", False)),
                          (datetime, str))
PLACED_AT_ASC = Ordering("orders.placed_at_asc", (("placed_at", False), ("order_id", True)),
                         (datetime, str))
TOTAL_AMOUNT_DESC = Ordering("orders.total_amount_desc", (("total_amount", True), ("order_id", False)),
                             (Decimal, str))


@dataclass(frozen=True, slots=True)
class OrderCriteria:
    """Filters of an order list. ``statuses`` None: any; placed_after inclusive,
    placed_before exclusive (adjacent windows do not overlap)."""

    statuses: tuple[str, ...] | None = None
    customer_id: str | None = None
    placed_after: datetime | None = None
    placed_before: datetime | None = None
    min_total: Decimal | None = None


def _by_id_sql(scoped: bool, seq: bool = False) -> Sql:
    text = f"SELECT {COLUMNS}{', updated_seq' if seq else ''} FROM {table(ORDER_SUMMARY)} WHERE order_id = $1"
    return Sql(text + " AND customer_id = $2" if scoped else text, (ORDER_SUMMARY,))


# Built once: the hot path of the API.
_BY_ID = {False: _by_id_sql(False), True: _by_id_sql(True)}
_BY_ID_SEQ = {False: _by_id_sql(False, True), True: _by_id_sql(True, True)}


async def by_id(db: ReadDb, viewer: Viewer, order_id: str) -> asyncpg.Record | None:
    """The order, or None when it does not exist or the viewer may not see it."""
    if viewer.customer_id is None:
        return await db.fetchrow(_BY_ID[False], order_id)
    return await db.fetchrow(_BY_ID[True], order_id, viewer.customer_id)


async def by_id_with_seq(db: ReadDb, viewer: Viewer, order_id: str) -> asyncpg.Record | None:
    """As :func:`by_id`, with the row's ``updated_seq`` (a subscription's first message)."""
    if viewer.customer_id is None:
        return await db.fetchrow(_BY_ID_SEQ[False], order_id)
    return await db.fetchrow(_BY_ID_SEQ[True], order_id, viewer.customer_id)


def _criteria(where: Where, viewer: Viewer, criteria: OrderCriteria) -> None:
    where.add("placed_at IS NOT NULL")
    restrict(where, viewer)
    if criteria.statuses is not None:
        where.add(status_clause(where, criteria.statuses))
    if criteria.customer_id is not None:
        where.add(f"customer_id = {where.param(criteria.customer_id)}")
    if criteria.placed_after is not None:
        where.add(f"placed_at >= {where.param(criteria.placed_after)}")
    if criteria.placed_before is not None:
        where.add(f"placed_at < {where.param(criteria.placed_before)}")
    if criteria.min_total is not None:
        where.add(f"total_amount >= {where.param(criteria.min_total)}")


async def page_of(db: ReadDb, viewer: Viewer, criteria: OrderCriteria, ordering: Ordering,
                  win: Window) -> Page[asyncpg.Record]:
    """One page of the orders matching ``criteria`` in ``ordering``."""
    where = Where()
    _criteria(where, viewer, criteria)
    if ordering is TOTAL_AMOUNT_DESC:
        where.add("total_amount IS NOT NULL")
    keyset(where, ordering, win)
    limit = where.param(fetch_limit(win))
    text = (f"SELECT {COLUMNS} FROM {table(ORDER_SUMMARY)}{where.sql()} "
            f"ORDER BY {ordering.order_by(win.backward)} LIMIT {limit}")
    return page(await db.fetch(Sql(text, (ORDER_SUMMARY,)), *where.args), win)


async def count(db: ReadDb, viewer: Viewer, criteria: OrderCriteria) -> int:
    """How many orders match ``criteria`` (cursors aside)."""
    where = Where()
    _criteria(where, viewer, criteria)
    text = f"SELECT count(*) FROM {table(ORDER_SUMMARY)}{where.sql()}"
    row = await db.fetchrow(Sql(text, (ORDER_SUMMARY,)), *where.args)
    return int(row[0]) if row is not None else 0


def _customers_where(viewer: Viewer, statuses: tuple[str, ...] | None, *args: object) -> Where:
    where = Where(*args)
    where.add("placed_at IS NOT NULL")
    restrict(where, viewer)
    if statuses is not None:
        where.add(status_clause(where, statuses))
    return where


async def pages_by_customer(db: ReadDb, viewer: Viewer, customer_ids: Sequence[str],
                            statuses: tuple[str, ...] | None,
                            win: Window) -> dict[str, Page[asyncpg.Record]]:
    """The same page (newest first) of each customer's orders, in one statement."""
    where = _customers_where(viewer, statuses, list(customer_ids))
    where.add("customer_id = c.cid")
    keyset(where, PLACED_AT_DESC, win)
    limit = where.param(fetch_limit(win))
    # LATERAL: one index range scan per customer on (customer_id, placed_at DESC, order_id).
    text = (f"SELECT o.* FROM unnest($1::text[]) AS c(cid) CROSS JOIN LATERAL ("
            f"SELECT {COLUMNS} FROM {table(ORDER_SUMMARY)}{where.sql()} "
            f"ORDER BY {PLACED_AT_DESC.order_by(win.backward)} LIMIT {limit}) AS o")
    rows = await db.fetch(Sql(text, (ORDER_SUMMARY,)), *where.args)
    grouped: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        grouped[row["customer_id"]].append(row)
    return {cid: page(grouped.get(cid, []), win) for cid in customer_ids}


async def counts_by_customer(db: ReadDb, viewer: Viewer, customer_ids: Sequence[str],
                             statuses: tuple[str, ...] | None) -> dict[str, int]:
    """How many listed orders each customer has, in one statement."""
    where = _customers_where(viewer, statuses, list(customer_ids))
    where.add("customer_id = ANY($1::text[])")
    text = (f"SELECT customer_id, count(*) FROM {table(ORDER_SUMMARY)}{where.sql()} "
            "GROUP BY customer_id")
    rows = await db.fetch(Sql(text, (ORDER_SUMMARY,)), *where.args)
    counts = {r[0]: int(r[1]) for r in rows}
    return {cid: counts.get(cid, 0) for cid in customer_ids}
