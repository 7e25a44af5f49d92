"""Reads of ``order_timeline``: the events of several orders at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import asyncpg

from api.auth import Viewer
from api.db import ReadDb, Sql, Where, table
from api.sql.order_summary import ORDER_SUMMARY

ORDER_TIMELINE = "order_timeline"


async def by_orders(db: ReadDb, viewer: Viewer,
                    order_ids: Sequence[str]) -> dict[str, list[asyncpg.Record]]:
    """Each order's events in (occurred_at, event_id) order, in one statement."""
    where = Where(list(order_ids))
    where.add("t.order_id = ANY($1::text[])")
    tables: tuple[str, ...] = (ORDER_TIMELINE,)
    if viewer.customer_id is not None:
        # The timeline has no customer column: a customer's events are those
        # of its own orders.
        where.add(f"EXISTS (SELECT 1 FROM {table(ORDER_SUMMARY)} s WHERE s.order_id = t.order_id "
                  f"AND s.customer_id = {where.param(viewer.customer_id)})")
        tables = (ORDER_TIMELINE, ORDER_SUMMARY)
    text = (f'SELECT t.order_id, t.event_id, t.event_type, t.occurred_at, t.topic, t."partition", '
            f't."offset" FROM {table(ORDER_TIMELINE)} AS t{where.sql()} '
            "ORDER BY t.order_id, t.occurred_at, t.event_id")
    grouped: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in await db.fetch(Sql(text, tables), *where.args):
        grouped[row["order_id"]].append(row)
    return grouped
