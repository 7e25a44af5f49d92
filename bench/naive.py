"""The baseline: a consumer written like the tutorials.

One transaction per event, a processed_events table for de-duplication, and
the same read-model SQL applied one event at a time (no row cache). This is
what the engine's batching is measured against.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer

from projector.contracts import decode
from projector.events import Event
from projector.projection import Positioned
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection

PHYSICAL = {t: t for t in (*OrdersProjection.tables, *TimelineProjection.tables)}


async def run_naive(dsn: str, bootstrap: str, topics: Sequence[str], limit: int,
                    synchronous_commit: str = "on") -> dict[str, float]:
    """Consume ``limit`` records from the start of ``topics``; return the rate.

    ``synchronous_commit``: "on" as the tutorials (PostgreSQL's default); "off" as the
    engine's sessions, to compare the batching alone.
    """
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": synchronous_commit})
    await conn.execute("CREATE TABLE IF NOT EXISTS processed_events (event_id text PRIMARY KEY)")
    projections = (OrdersProjection(cache_rows=0), TimelineProjection())
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                group_id=f"naive-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=True,
                                session_timeout_ms=6000)
    await consumer.start()
    done = 0
    started = time.perf_counter()
    try:
        async for msg in consumer:
            event = decode(msg.value, msg.key, list(msg.headers or ()))
            if isinstance(event, Event):
                async with conn.transaction():
                    seen = await conn.fetchval(
                        "INSERT INTO processed_events VALUES ($1) ON CONFLICT DO NOTHING"
                        " RETURNING 1", event.event_id)
                    if seen:
                        one = [Positioned(event, msg.topic, msg.partition, msg.offset)]
                        for p in projections:
                            await p.apply(conn, one, PHYSICAL)
            done += 1
            if done == 1:
                started = time.perf_counter()  # not counting the group join
            if done >= limit:
                break
    finally:
        elapsed = time.perf_counter() - started
        await consumer.stop()
        await conn.close()
    return {"records": done, "seconds": elapsed, "records_per_s": done / elapsed}
