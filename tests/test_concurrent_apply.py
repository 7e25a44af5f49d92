"""Two instances applying the same event at once must not count it twice.

A keyless producer that re-sends an event can put the two copies on different
partitions, owned by different instances: both see a new order, both insert.
"""

from __future__ import annotations

import asyncio

import asyncpg
from enginekit import migrated_pool, simulate, valid_events

from projector.projection import Positioned
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection

PHYSICAL = {t: t for t in (*OrdersProjection.tables, *TimelineProjection.tables)}


async def test_the_same_new_order_event_applied_by_two_instances_counts_once(pg_dsn: str) -> None:
    pool = await migrated_pool(pg_dsn)
    await pool.close()
    events = valid_events(simulate(("t",) * 10, orders=1, seed=2))
    placed = next(e for e in events if e.event_type == "OrderPlaced")
    a, b = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        first = a.transaction()
        await first.start()
        await OrdersProjection().apply(a, [Positioned(placed, "t", 0, 0)], PHYSICAL)

        async def other_instance() -> None:
            async with b.transaction():
                await OrdersProjection().apply(b, [Positioned(placed, "t", 1, 0)], PHYSICAL)

        second = asyncio.create_task(other_instance())
        await asyncio.sleep(0.3)  # the second insert now waits on the first's row
        assert not second.done()
        await first.commit()
        await asyncio.wait_for(second, 10)
        row = await a.fetchrow("SELECT order_count FROM customer_summary WHERE customer_id = $1",
                               placed.payload["customer_id"])
        assert row is not None and row["order_count"] == 1
        assert await a.fetchval("SELECT sum(orders_placed) FROM daily_sales") == 1
        assert await a.fetchval("SELECT sum(order_count) FROM product_sales") == len(
            {i["sku"] for i in placed.payload["items"]})
    finally:
        await a.close()
        await b.close()


async def test_an_order_the_row_cache_does_not_know_is_found_by_its_insert(pg_dsn: str) -> None:
    """A batch with an OrderPlaced is written without reading its order first; an instance
    that never saw the order (a restart, another instance's partition) must still fold
    into the stored row, not beside it, when that OrderPlaced comes again."""
    pool = await migrated_pool(pg_dsn)
    await pool.close()
    events = valid_events(simulate(("t",) * 10, orders=1, seed=3))
    placed = next(e for e in events if e.event_type == "OrderPlaced")
    rest = [e for e in events if e.event_type != "OrderPlaced"]
    assert rest, "the simulated order needs events after OrderPlaced"
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await OrdersProjection().apply(conn, [Positioned(placed, "t", 0, 0)], PHYSICAL)
        before = await conn.fetchval("SELECT count(*) FROM order_summary")
        # A fresh instance (empty row cache): the duplicate OrderPlaced makes it assume a new order.
        async with conn.transaction():
            await OrdersProjection().apply(
                conn, [Positioned(e, "t", 0, i + 1) for i, e in enumerate([placed, *rest])], PHYSICAL)
        row = await conn.fetchrow("SELECT event_count, status FROM order_summary WHERE order_id = $1",
                                  placed.order_id)
        assert before == 1 and await conn.fetchval("SELECT count(*) FROM order_summary") == 1
        assert row is not None and row["event_count"] == len({e.event_id for e in events})
        assert await conn.fetchval("SELECT sum(order_count) FROM customer_summary") == 1
        assert await conn.fetchval("SELECT sum(orders_placed) FROM daily_sales") == 1
    finally:
        await conn.close()
