"""`projector dev`: the whole server on one machine, embedded servers included.

Starts what is not configured (PostgreSQL, the broker), creates the topics,
migrates, then runs the workers and the API, supervising the child servers:
one that dies stops everything with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncpg

from projector.db import create_pool, migrate, redact_url, reset_read_models
from projector.embedded import ChildProcess, EmbeddedBroker, EmbeddedPostgres, free_port
from projector.errors import EmbeddedServerError
from projector.settings import Settings
from projector.topics import ensure_topics

log = logging.getLogger("projector.dev")

DEV_DATABASE = "projector"
# How long the banner waits for the projector to have its partitions, after the API serves.
CONSUMING_PATIENCE_S = 30.0


class DevStack:
    """The embedded servers that ``projector dev`` started (and must stop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None

    @property
    def children(self) -> list[ChildProcess]:
        return [s.child for s in (self.postgres, self.broker) if s is not None]

    def start(self) -> Settings:
        """Start what is missing; return settings that point at everything."""
        # Another process may hold the default metrics port: take a free one.
        settings = self.settings.with_(
            metrics_port=free_port(self.settings.metrics_port, self.settings.metrics_host))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if not settings.database_url:
                self.postgres = EmbeddedPostgres(self.data_dir / "postgres", durable=True)
                self.postgres.start()
                asyncio.run(_ensure_database(self.postgres.url, DEV_DATABASE))
                settings = settings.with_(database_url=self.postgres.url_for(DEV_DATABASE))
            if not settings.kafka_bootstrap_servers:
                self.broker = EmbeddedBroker(self.data_dir)
                settings = settings.with_(kafka_bootstrap_servers=self.broker.start())
        except BaseException:
            self.stop()
            raise
        return settings

    def stop(self) -> None:
        # The broker first: the database outlives every client of it.
        for server in (self.broker, self.postgres):
            if server is not None:
                server.stop()

    async def supervise_routine(self) -> None:
        """Raise EmbeddedServerError as soon as a child server exits."""
        while True:
            for child in self.children:
                if child.exit_code() is not None:
                    raise child.died()
            await asyncio.sleep(0.5)


async def _ensure_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def banner(settings: Settings, stack: DevStack, reset: bool, demo: bool, consuming: bool = True) -> str:
    url = f"http://{settings.api_host}:{settings.api_port}/graphql"
    pg = "embedded" if stack.postgres else "external"
    kafka = "embedded, in memory" if stack.broker else "external"
    lines = [
        "",
        "  projector dev is running",
        "",
        f"  GraphQL API   {url}   (GraphiQL: open it in a browser)",
        f"  Health        http://{settings.api_host}:{settings.api_port}/healthz   (API)",
        f"  Metrics       http://{settings.metrics_host}:{settings.metrics_port}/metrics   "
        "(projector; also /healthz, /readyz)",
        f"  PostgreSQL    {redact_url(settings.database_url or '')}   ({pg})",
        f"  Kafka         {settings.kafka_bootstrap_servers}   ({kafka})",
        f"  Topics        {len(settings.topics)} order topics, e.g. {settings.topics[0]}",
        "  Projector     " + ("consuming them: events published now show up in the API" if consuming
                             else "not consuming yet (joining the consumer group, or rebuilding: "
                                  "see the log)"),
    ]
    if reset:
        lines.append("  Read models   started empty: the embedded broker keeps its log in memory,")
        lines.append("                so every run begins with empty topics")
    if demo:
        lines.append("  Demo          publishing simulated order events")
    lines += ["", "  Stop with Ctrl-C (stops everything started here).", ""]
    return "\n".join(lines)


async def run_dev(settings: Settings, stack: DevStack, stopping: asyncio.Event,
                  demo: bool = False, demo_orders: int = 2000) -> int:
    from api.server import serve_api
    from projector.projections import ALL
    from projector.workers import run_workers

    await ensure_topics(settings.require_kafka(), settings.topics, settings.topic_partitions)
    pool = await create_pool(settings.require_database(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, ALL)
            if stack.broker is not None:
                await reset_read_models(conn, ALL)
    finally:
        await pool.close()

    api_started = asyncio.Event()
    consuming = asyncio.Event()
    tasks: dict[str, asyncio.Task[Any]] = {}

    def spawn(name: str, coro: Coroutine[Any, Any, Any]) -> None:
        tasks[name] = asyncio.create_task(coro, name=name)

    spawn("supervisor", stack.supervise_routine())
    spawn("workers", run_workers(settings, stopping, ALL, apply_migrations=False, ready=consuming))
    spawn("api", serve_api(settings, stopping, api_started))
    if demo:
        spawn("demo", _demo_routine(settings, demo_orders))
    exit_code = 0
    waiter = asyncio.create_task(stopping.wait())
    announced = asyncio.create_task(_started(api_started, consuming))
    try:
        pending: set[asyncio.Task[Any]] = {waiter, announced, *tasks.values()}
        while not stopping.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if announced in done:
                print(banner(settings, stack, stack.broker is not None, demo, consuming.is_set()),
                      file=sys.stderr, flush=True)
            for task in done - {waiter, announced}:
                exc = task.exception()
                if task.get_name() == "demo" and exc is None:
                    log.info("demo events published")
                    continue
                if exc is not None:
                    if isinstance(exc, EmbeddedServerError):
                        log.error("%s", exc)
                    else:
                        log.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
                    exit_code = 1
                else:
                    log.error("%s stopped unexpectedly", task.get_name())
                    exit_code = 1
                stopping.set()
    finally:
        # Shutdown, in order: 1. tell the API and workers to stop (stopping is
        # set); 2. let them finish their in-flight work; 3. the caller then
        # stops the embedded servers.
        stopping.set()
        log.info("stopping")
        for name in ("api", "workers"):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(tasks[name]), 15)
        for task in [*tasks.values(), waiter, announced]:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return exit_code


async def _started(api_started: asyncio.Event, consuming: asyncio.Event) -> None:
    """The API serves, and the projector has its partitions (joining the consumer group
    takes a few seconds): a newcomer who publishes after the banner sees the events
    arrive. Not longer than CONSUMING_PATIENCE_S for the projector (a rebuild may run)."""
    await api_started.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(consuming.wait(), CONSUMING_PATIENCE_S)


async def _demo_routine(settings: Settings, orders: int) -> None:
    from projector.simulator import publish_demo

    await publish_demo(settings.require_kafka(), orders=orders, topics=settings.topics)
