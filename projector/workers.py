"""The projector worker service: a pool, the engine, and retries around start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import asyncpg
from prometheus_client import REGISTRY

from projector.db import create_pool, is_transient, migrate
from projector.engine import Engine
from projector.errors import ConfigError
from projector.gc_tuning import tune_gc
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
                      apply_migrations: bool = True, ready: asyncio.Event | None = None) -> None:
    """Run the engine until ``stopping`` is set.

    A projection whose code version differs from its tables' version is
    rebuilt blue/green first (unless PROJECTOR_AUTO_REBUILD=false); meanwhile
    its old tables keep serving, and the other projections run live.
    ``ready``: set once an engine has its partitions and has sought to its checkpoints.
    """
    if projections is None:
        from projector.projections import ALL

        projections = ALL
    tune_gc()
    pool = await connect_with_retry(settings.require_database(), stopping, min_size=1, max_size=6)
    if pool is None:
        return
    try:
        if apply_migrations:
            async with pool.acquire() as conn:
                await migrate(conn, projections)
        metrics = EngineMetrics(REGISTRY)
        current: list[Engine] = []
        relays: list[asyncio.Task[None]] = []

        def started(engine: Engine) -> None:
            current.append(engine)
            if ready is not None:
                relays.append(asyncio.create_task(_relay(engine.ready, ready)))

        health = HealthServer(settings.metrics_host, settings.metrics_port, REGISTRY,
                              lambda: current[-1].readiness() if current else (False, {}))
        try:
            await health.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.metrics_host}:{settings.metrics_port} for metrics "
                f"({exc.strerror}); set PROJECTOR_METRICS_PORT to a free port, or 0 for any"
            ) from exc
        try:
            stale = await _stale(pool, projections)
            if stale and settings.auto_rebuild and not stopping.is_set():
                await _rebuild_then_join(settings, pool, projections, stale, metrics, started,
                                         stopping)
            elif stale:
                log.warning("projection(s) %s: the tables were built by another version of the "
                            "code; PROJECTOR_AUTO_REBUILD=false, so they are not rebuilt. Run "
                            "`projector rebuild %s`.", ", ".join(p.name for p in stale),
                            " ".join(p.name for p in stale))
            if not stopping.is_set():
                engine = Engine(settings, pool, projections, metrics=metrics)
                started(engine)
                await engine.run(stopping)
        finally:
            for relay in relays:
                relay.cancel()
            await health.stop()
    finally:
        await pool.close()


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _stale(pool: asyncpg.Pool, projections: Sequence[Projection]) -> list[Projection]:
    async with pool.acquire() as conn:
        versions = dict(await conn.fetch("SELECT name, version FROM projections"))
    return [p for p in projections if versions.get(p.name, p.version) != p.version]


async def _rebuild_then_join(settings: Settings, pool: asyncpg.Pool,
                             projections: Sequence[Projection], stale: Sequence[Projection],
                             metrics: EngineMetrics, started: Callable[[Engine], None],
                             stopping: asyncio.Event) -> None:
    from projector.rebuild import Rebuild

    names = ", ".join(p.name for p in stale)
    log.warning("projection(s) %s: code version differs from the tables' version; rebuilding "
                "blue/green now (set PROJECTOR_AUTO_REBUILD=false to skip)", names)
    fresh = [p for p in projections if p not in stale]
    phase_done = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if fresh:
        engine = Engine(settings, pool, fresh, metrics=metrics)
        started(engine)
        tasks.append(asyncio.create_task(engine.run(phase_done)))
    job = asyncio.create_task(Rebuild(settings, pool, stale).run())
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({job, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            job.result()
            log.info("rebuild of %s done; projecting it live", names)
        else:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
    finally:
        phase_done.set()
        stop_wait.cancel()
        for task in tasks:
            await task
