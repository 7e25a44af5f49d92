"""Helpers for tests that run the engine against the real servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from projector.contracts import decode
from projector.db import create_pool, migrate
from projector.engine import Engine
from projector.events import Event
from projector.projection import Positioned, Projection
from projector.projections import ALL
from projector.projections.orders import OrdersProjection
from projector.settings import Settings
from projector.simulator import Record, SimulationOptions, generate, publish, topic_map_for


def settings_for(pg_dsn: str, kafka_bootstrap: str, topics: Sequence[str], **kw: object) -> Settings:
    return Settings(database_url=pg_dsn, kafka_bootstrap_servers=kafka_bootstrap,
                    topics=tuple(topics), session_timeout_ms=6000, **kw)  # type: ignore[arg-type]


def simulate(topics: Sequence[str], **options: object) -> list[Record]:
    opts = SimulationOptions(topic_map=topic_map_for(topics), **options)  # type: ignore[arg-type]
    return list(generate(opts))


def valid_events(records: Sequence[Record]) -> list[Event]:
    """The events the projector sees: the valid records, decoded from their bytes.

    (Decoded rather than taken from ``Record.event``: a JSON number such as
    9.00 reaches the projector as Decimal("9.0"), equal but not identical.)
    """
    out: list[Event] = []
    for r in records:
        if r.event is not None:
            event = decode(r.value, r.key, list(r.headers))
            assert isinstance(event, Event), event
            out.append(event)
    return out


async def send(records: Sequence[Record], kafka_bootstrap: str) -> None:
    await publish(records, kafka_bootstrap)


async def migrated_pool(pg_dsn: str, projections: Sequence[Projection] = ALL) -> asyncpg.Pool:
    pool = await create_pool(pg_dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, projections)
    return pool


async def wait_caught_up(engine: Engine, partitions: int, timeout_s: float = 60.0) -> None:
    """Until every partition is known and its lag (high watermark - checkpoint) is 0."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        lag = engine.lag()
        if len(lag) == partitions and not any(lag.values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"engine did not catch up within {timeout_s} s: lag {engine.lag()}")


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``engine`` in the background; stop it (gracefully) on exit."""
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    try:
        yield task
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


class Exploding(OrdersProjection):
    """The real projection, made to raise on chosen events (a projection bug)."""

    def __init__(self, poison: set[str]) -> None:
        super().__init__()
        self.poison = poison

    async def apply(self, conn: Any, batch: Sequence[Positioned],
                    physical: Mapping[str, str]) -> set[str]:
        bad = [p.event.event_id for p in batch if p.event.event_id in self.poison]
        if bad:
            raise ValueError(f"cannot project {bad}")
        return await super().apply(conn, batch, physical)
