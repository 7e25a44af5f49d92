"""The projector worker service: a pool, the engine, and retries around start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from prometheus_client import REGISTRY

from projector.db import create_pool, is_transient, migrate
from projector.engine import Engine
from projector.errors import ConfigError
from projector.health import HealthServer
from projector.metrics import EngineMetrics
from projector.projection import Projection
from projector.retry import Backoff
from projector.settings import Settings

log = logging.getLogger("projector.workers")


async def connect_with_retry(url: str, stopping: asyncio.Event, **kwargs: object) -> asyncpg.Pool | None:
    """A pool, retrying while PostgreSQL is unreachable; None if stopped first."""
    backoff = Backoff(cap_s=5.0)
    while not stopping.is_set():
        try:
            return await create_pool(url, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()
            log.warning("%s; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
    return None


async def run_workers(settings: Settings, stopping: asyncio.Event,
                      projections: Sequence[Projection] | None = None,
                      apply_migrations: bool = True, engine_ready: asyncio.Event | None = None) -> None:
    """Run the engine until ``stopping`` is set."""
    if projections is None:
        from projector.projections import ALL

        projections = ALL
    pool = await connect_with_retry(settings.require_database(), stopping, min_size=1, max_size=4)
    if pool is None:
        return
    try:
        if apply_migrations:
            async with pool.acquire() as conn:
                await migrate(conn, projections)
        metrics = EngineMetrics(REGISTRY)
        engine = Engine(settings, pool, projections, metrics=metrics)
        if engine_ready is not None:
            engine.ready = engine_ready
        health = HealthServer(settings.metrics_host, settings.metrics_port, REGISTRY,
                              engine.readiness)
        try:
            await health.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.metrics_host}:{settings.metrics_port} for metrics "
                f"({exc.strerror}); set PROJECTOR_METRICS_PORT to a free port, or 0 for any"
            ) from exc
        try:
            await engine.run(stopping)
        finally:
            await health.stop()
    finally:
        await pool.close()
