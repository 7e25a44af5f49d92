"""Blue/green rebuilds: a projection rebuilt from the log into shadow tables, then swapped.

While the shadow fills, the live tables keep serving and the live projector
keeps running. The cut-over holds live writes briefly (an advisory lock that
every live batch takes shared), lets the shadow reach the live checkpoints,
and swaps the tables by renaming them in one transaction. A rebuild killed at
any point leaves the live tables untouched: its session locks go with it, and
the next rebuild drops the abandoned shadow tables.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from projector.checkpoints import FROM_LOG_START
from projector.engine import NOTIFY_CHANNEL, Engine, live_lock_key
from projector.errors import ConfigError, LogTruncatedError
from projector.projection import Positioned, Projection
from projector.projections._names import quote_ident
from projector.rebuild_worker import parse_key
from projector.runtime import gather_or_cancel
from projector.settings import Settings

log = logging.getLogger("projector.rebuild")

PREV = "__prev"


def rebuild_lock_key(projection: str) -> int:
    return live_lock_key(f"rebuild:{projection}")


class Shadow:
    """The projection's code under another name (its own checkpoints) and tables."""

    def __init__(self, inner: Projection, name: str) -> None:
        self.inner = inner
        self.name = name
        self.version = inner.version
        self.tables = inner.tables

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        return self.inner.ddl(physical)

    async def apply(self, conn: Any, batch: Sequence[Positioned],
                    physical: Mapping[str, str]) -> set[str]:
        return await self.inner.apply(conn, batch, physical)

    async def prepare(self, batch: Sequence[Positioned], physical: Mapping[str, str]) -> None:
        prepare = getattr(self.inner, "prepare", None)
        if prepare is not None:
            await prepare(batch, physical)


@dataclass(slots=True)
class Progress:
    phase: str
    partitions: list[tuple[str, int, int, int]]  # topic, partition, done, total
    events_per_second: float
    started_at: float

    @property
    def done(self) -> int:
        return sum(p[2] for p in self.partitions)

    @property
    def total(self) -> int:
        return sum(p[3] for p in self.partitions)

    @property
    def eta_s(self) -> float | None:
        left = self.total - self.done
        return left / self.events_per_second if self.events_per_second > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "done": self.done, "total": self.total,
                "events_per_second": round(self.events_per_second, 1), "eta_s": self.eta_s,
                "partitions": [list(p) for p in self.partitions]}


@dataclass(slots=True)
class Plan:
    projection: Projection
    generation: int
    shadow: Shadow
    tables: dict[str, str]  # logical -> shadow physical
    partial: bool = False
    summary: list[str] = field(default_factory=list)


class Rebuild:
    """Rebuilds ``projections`` (the live instances' classes) from the start of the log.

    Parameters: ``allow_partial`` accepts a log whose start is above offset 0
    (retention deleted events; recorded and shown in status);
    ``batch_max_events`` sizes the shadow's batches (default 20,000);
    ``catchup_lag`` is how close (events) the shadow must be before the
    cut-over holds live writes (default 2,000); ``on_progress`` is called
    about twice a second.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool, projections: Sequence[Projection],
                 *, allow_partial: bool = False, batch_max_events: int = 20_000,
                 catchup_lag: int = 2_000, workers: int = 1,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.projections = list(projections)
        self.allow_partial = allow_partial
        self.batch_max_events = batch_max_events
        self.catchup_lag = catchup_lag
        self.workers = max(1, workers)
        self.on_progress = on_progress
        self.plans: list[Plan] = []
        self._started = time.monotonic()
        self._cancelled = False
        # Where log start offsets come from; a test may stand in for retention
        # on a broker that cannot delete records.
        self.log_starts: Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]] \
            | None = None

    # -- the whole run -------------------------------------------------------

    async def run(self) -> list[Plan]:
        lockconn: asyncpg.Connection = await asyncpg.connect(self.settings.require_database())
        try:
            for p in self.projections:
                if not await lockconn.fetchval("SELECT pg_try_advisory_lock($1)",
                                               rebuild_lock_key(p.name)):
                    raise ConfigError(f"a rebuild of {p.name!r} is already running; "
                                      f"stop it with `projector rebuild --cancel {p.name}`")
            partial = await self._history_check()
            async with self.pool.acquire() as conn:
                for p in self.projections:
                    await _drop_abandoned(conn, p.name)
                    self.plans.append(await self._prepare(conn, p, partial))
            if self.workers > 1 and self._parallel_possible():
                await self._load_in_processes(self.workers)
            else:
                await self._run_shadow("loading", self._near_end)
            await self._finish_tables()
            await self._run_shadow("catching up", self._near_end)
            # Cut-over: hold live writes (in-flight batches finish first), then
            # let the shadow reach exactly the live checkpoints.
            for plan in self.plans:
                await lockconn.execute("SELECT pg_advisory_lock($1)",
                                       live_lock_key(plan.projection.name))
            live = await self._live_checkpoints()
            await self._run_shadow("cut-over", lambda e: _reached(e, self.plans, live))
            async with self.pool.acquire() as conn:
                for plan in self.plans:
                    plan.summary = await diff_summary(conn, plan.projection.tables, plan.tables)
                    for line in plan.summary:
                        log.info("%s: %s", plan.projection.name, line)
                await self._swap(conn)
            return self.plans
        except BaseException:
            with contextlib.suppress(Exception):
                async with self.pool.acquire() as conn:
                    for plan in self.plans:
                        await _drop_abandoned(conn, plan.projection.name,
                                              "CANCELLED" if self._cancelled else "ABANDONED")
            raise
        finally:
            await lockconn.close()  # releases every session lock

    # -- steps ---------------------------------------------------------------

    async def _history_check(self) -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.require_kafka(),
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            tps = [TopicPartition(t, p) for t in self.settings.topics
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
            source = self.log_starts or consumer.beginning_offsets
            starts = await source(tps) if tps else {}
        finally:
            await consumer.stop()
        truncated = {f"{tp.topic}[{tp.partition}]": o for tp, o in starts.items() if o > 0}
        if truncated and not self.allow_partial:
            shown = ", ".join(f"{k} starts at {v}" for k, v in sorted(truncated.items())[:5])
            raise LogTruncatedError(
                f"the log no longer holds the full history ({shown}"
                f"{'...' if len(truncated) > 5 else ''}): retention deleted events, so a rebuild "
                "would miss them. Pass --allow-partial to rebuild from what is left (recorded "
                "as partial and shown in status).")
        return bool(truncated)

    async def _prepare(self, conn: asyncpg.Connection, p: Projection, partial: bool) -> Plan:
        generation = int(await conn.fetchval(
            "SELECT coalesce(max(generation), 0) + 1 FROM rebuilds WHERE projection = $1",
            p.name))
        tables = {t: f"{t}__r{generation}" for t in p.tables}
        inner: Projection
        try:
            inner = type(p)()  # fresh state (caches) for the shadow
        except TypeError:
            inner = p
        shadow = Shadow(inner, f"{p.name}#r{generation}")
        async with conn.transaction():
            for stmt in p.ddl(tables):
                if stmt.startswith("CREATE INDEX"):
                    continue  # built after the bulk load, much faster
                # Unlogged while loading: no WAL for data that a crash may discard.
                await conn.execute(stmt.replace("CREATE TABLE", "CREATE UNLOGGED TABLE", 1))
            await conn.execute(
                "INSERT INTO rebuilds (projection, generation, version, state, partial, tables)"
                " VALUES ($1, $2, $3, 'RUNNING', $4, $5::jsonb)",
                p.name, generation, p.version, partial, orjson.dumps(tables).decode())
        log.info("rebuilding %s (version %d) into %s", p.name, p.version,
                 ", ".join(tables.values()))
        return Plan(p, generation, shadow, tables, partial)

    async def _finish_tables(self) -> None:
        """Per shadow table: SET LOGGED, its secondary indexes, ANALYZE; two tables at
        a time (each step is one backend's work, and a rebuild has two large tables)."""
        jobs: list[tuple[str, list[str]]] = []
        for plan in self.plans:
            indexes = [s for s in plan.projection.ddl(plan.tables) if s.startswith("CREATE INDEX")]
            for physical in plan.tables.values():
                on = f" ON {quote_ident(physical)} "
                jobs.append((physical, [s for s in indexes if on in s]))
                indexes = [s for s in indexes if on not in s]
            if indexes:
                raise ConfigError(f"{plan.projection.name}: index statements on no shadow table: "
                                  f"{indexes}")
        async with self.pool.acquire() as conn:  # the largest first
            sizes = dict(await conn.fetch(
                "SELECT t, pg_relation_size(t::regclass) FROM unnest($1::text[]) t",
                [quote_ident(physical) for physical, _ in jobs]))
        jobs.sort(key=lambda job: -sizes.get(quote_ident(job[0]), 0))
        slots = asyncio.Semaphore(2)

        async def finish(physical: str, indexes: list[str]) -> None:
            async with slots, self.pool.acquire() as conn:
                await conn.execute(f"ALTER TABLE {quote_ident(physical)} SET LOGGED")
                for stmt in indexes:
                    await conn.execute(stmt)
                await conn.execute(f"ANALYZE {quote_ident(physical)}")

        await gather_or_cancel(*(finish(*job) for job in jobs))

    async def _live_checkpoints(self) -> dict[str, dict[tuple[str, int], int]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT projection, topic, partition, next_offset FROM projector_checkpoints"
                " WHERE projection = ANY($1)", [p.projection.name for p in self.plans])
        out: dict[str, dict[tuple[str, int], int]] = {p.projection.name: {} for p in self.plans}
        for r in rows:
            out[r["projection"]][(r["topic"], r["partition"])] = r["next_offset"]
        return out

    async def _run_shadow(self, phase: str, done: Callable[[Engine], bool]) -> None:
        settings = self.settings.with_(batch_max_events=self.batch_max_events)
        engine = Engine(settings, self.pool, [p.shadow for p in self.plans], group_id=None,
                        client_id="projector-rebuild", shadow=True,
                        physical={p.shadow.name: p.tables for p in self.plans})
        stopping = asyncio.Event()
        task = asyncio.create_task(engine.run(stopping))
        last_t, last_n, eps = time.monotonic(), self._applied(engine), 0.0
        last_report = 0.0
        try:
            while True:
                await asyncio.sleep(0.1)
                if task.done():
                    task.result()
                    raise LogTruncatedError("the rebuild's consumer stopped unexpectedly")
                now = time.monotonic()
                if now - last_report >= 0.5:
                    n = self._applied(engine)
                    eps = 0.7 * eps + 0.3 * (n - last_n) / max(1e-6, now - last_t)
                    last_t, last_n, last_report = now, n, now
                    await self._report(phase, engine, eps)
                if engine.ready.is_set() and done(engine):
                    await self._report(phase, engine, eps)
                    break
        finally:
            stopping.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)

    def _parallel_possible(self) -> bool:
        """Worker processes build the projections by name: only the registered ones."""
        from projector.projections import ALL

        by_name = {p.name: type(p) for p in ALL}
        return all(by_name.get(p.projection.name) is type(p.projection) for p in self.plans)

    async def _load_in_processes(self, count: int) -> None:
        """The load phase in ``count`` processes, each a share of the partitions
        (``projector.rebuild_worker``); the catch-up that follows runs here."""
        base = {
            "database_url": self.settings.require_database(),
            "bootstrap": self.settings.require_kafka(),
            "topics": list(self.settings.topics),
            "batch_max_events": self.batch_max_events,
            "lag": max(1, self.catchup_lag // count),
            "log_level": "WARNING",
            "shadows": [{"name": p.shadow.name, "projection": p.projection.name,
                         "tables": p.tables} for p in self.plans],
        }
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "projector.rebuild_worker",
            orjson.dumps({**base, "share": [i, count]}).decode(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            for i in range(count)]
        latest: list[dict[str, Any]] = [{} for _ in procs]
        errors: list[collections.deque[str]] = [collections.deque(maxlen=40) for _ in procs]

        async def read(i: int, proc: asyncio.subprocess.Process) -> int:
            assert proc.stdout is not None and proc.stderr is not None

            async def errs(stream: asyncio.StreamReader) -> None:
                async for line in stream:  # drained, so that a chatty worker never blocks
                    errors[i].append(line.decode(errors="replace").rstrip())

            drain = asyncio.create_task(errs(proc.stderr))
            async for line in proc.stdout:
                with contextlib.suppress(orjson.JSONDecodeError):
                    latest[i] = orjson.loads(line)
            await drain
            return await proc.wait()

        readers = [asyncio.create_task(read(i, p)) for i, p in enumerate(procs)]
        last_t, last_n, eps = time.monotonic(), 0, 0.0
        try:
            while True:
                done, _ = await asyncio.wait(readers, timeout=0.5)
                for i, task in enumerate(readers):
                    if task in done and task.result() != 0:
                        raise LogTruncatedError(
                            f"rebuild worker {i + 1} of {count} failed (exit "
                            f"{task.result()}): " + " | ".join(list(errors[i])[-5:]))
                positions = {parse_key(k): v for w in latest for k, v in w.get("positions", {}).items()}
                ends = {parse_key(k): v for w in latest for k, v in w.get("ends", {}).items()}
                now = time.monotonic()
                n = sum(positions.values())
                eps = 0.7 * eps + 0.3 * (n - last_n) / max(1e-6, now - last_t)
                last_t, last_n = now, n
                await self._report_positions("loading", positions, ends, eps)
                if len(done) == len(readers):
                    return
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            for task in readers:
                with contextlib.suppress(Exception):
                    await task

    @staticmethod
    def _applied(engine: Engine) -> int:
        """Records the shadow moved past (all shadows share one consumer)."""
        pos = next(iter(engine.positions.values()), {})
        return sum(max(0, o) for o in pos.values())

    def _near_end(self, engine: Engine) -> bool:
        ends = engine.log_ends()
        if not ends or any(v is None for v in ends.values()):
            return False  # not every partition fetched yet
        return sum(engine.lag().values()) <= self.catchup_lag

    async def _report(self, phase: str, engine: Engine, eps: float) -> None:
        await self._report_positions(phase, next(iter(engine.positions.values()), {}),
                                     engine.log_ends(), eps)

    async def _report_positions(self, phase: str, shadow_pos: Mapping[tuple[str, int], int],
                                ends: Mapping[tuple[str, int], int | None], eps: float) -> None:
        parts = sorted((t, p, max(0, shadow_pos.get((t, p), 0)), ends.get((t, p)) or 0)
                       for t, p in ends)
        # A partition not fetched yet in this phase shows its checkpoint as its end.
        progress = Progress(phase, [(t, p, d, max(d, e)) for t, p, d, e in parts], eps,
                            self._started)
        if self.on_progress:
            self.on_progress(progress)
        async with self.pool.acquire() as conn:
            for plan in self.plans:
                state = await conn.fetchval(
                    "UPDATE rebuilds SET progress = $3::jsonb WHERE projection = $1"
                    " AND generation = $2 RETURNING cancel_requested", plan.projection.name,
                    plan.generation, orjson.dumps(progress.as_json()).decode())
                if state:
                    self._cancelled = True
                    raise ConfigError(f"rebuild of {plan.projection.name} cancelled")

    async def _swap(self, conn: asyncpg.Connection) -> None:
        """One transaction: tables renamed, checkpoints moved, version bumped, notified."""
        async with conn.transaction():
            swapped: list[str] = []
            for plan in self.plans:
                name = plan.projection.name
                prev_cps = await conn.fetch(
                    "SELECT topic, partition, next_offset FROM projector_checkpoints"
                    " WHERE projection = $1", name)
                prev_version = await conn.fetchval(
                    "SELECT version FROM projections WHERE name = $1", name)
                for logical, shadow in plan.tables.items():
                    await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(logical + PREV)}")
                    await rename_table(conn, logical, logical + PREV)
                    await rename_table(conn, shadow, logical)
                    swapped.append(logical)
                await conn.execute("DELETE FROM projector_checkpoints WHERE projection = $1", name)
                await conn.execute("UPDATE projector_checkpoints SET projection = $1"
                                   " WHERE projection = $2", name, plan.shadow.name)
                await conn.execute("DELETE FROM dead_letters WHERE projection = $1", name)
                await conn.execute("UPDATE dead_letters SET projection = $1 WHERE projection = $2",
                                   name, plan.shadow.name)
                await conn.execute(
                    "UPDATE projections SET version = $2, partial = $3, updated_at = now()"
                    " WHERE name = $1", name, plan.projection.version, plan.partial)
                await conn.execute(
                    "UPDATE rebuilds SET state = 'SWAPPED', finished_at = now(),"
                    " prev_version = $3, prev_checkpoints = $4::jsonb"
                    " WHERE projection = $1 AND generation = $2", name, plan.generation,
                    prev_version, orjson.dumps([list(r.values()) for r in prev_cps]).decode())
            await notify_swap(conn, swapped)
        log.info("swapped in: %s", ", ".join(swapped))


def _reached(engine: Engine, plans: Sequence[Plan],
             live: Mapping[str, Mapping[tuple[str, int], int]]) -> bool:
    for plan in plans:
        mine = engine.positions.get(plan.shadow.name, {})
        for tp, offset in live[plan.projection.name].items():
            if offset != FROM_LOG_START and mine.get(tp, FROM_LOG_START) < offset:
                return False
    return True


async def rename_table(conn: asyncpg.Connection, old: str, new: str) -> None:
    """Rename a table and the indexes named after it (``<old>_x`` -> ``<new>_x``)."""
    indexes = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        old)
    await conn.execute(f"ALTER TABLE {quote_ident(old)} RENAME TO {quote_ident(new)}")
    for r in indexes:
        index = r["indexname"]
        if index.startswith(old + "_"):
            await conn.execute(f"ALTER INDEX {quote_ident(index)} RENAME TO "
                               f"{quote_ident(new + index[len(old):])}")


async def notify_swap(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    """Tell change feeds the tables were replaced: they must re-read, not catch up."""
    seq = await conn.fetchval("SELECT last_value FROM projector_updated_seq")
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL,
                       orjson.dumps({"tables": sorted(tables), "seq": seq,
                                     "swapped": True}).decode())


async def _drop_abandoned(conn: asyncpg.Connection, name: str, state: str = "ABANDONED") -> None:
    """Remove the shadow tables and checkpoints of runs that did not finish."""
    rows = await conn.fetch("SELECT generation, tables FROM rebuilds WHERE projection = $1"
                            " AND state = 'RUNNING'", name)
    for r in rows:
        tables = orjson.loads(r["tables"]) if isinstance(r["tables"], str | bytes) else r["tables"]
        async with conn.transaction():
            for physical in tables.values():
                await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(physical)}")
            shadow = f"{name}#r{r['generation']}"
            await conn.execute("DELETE FROM projector_checkpoints WHERE projection = $1", shadow)
            await conn.execute("DELETE FROM dead_letters WHERE projection = $1", shadow)
            await conn.execute("UPDATE rebuilds SET state = $3, finished_at = now()"
                               " WHERE projection = $1 AND generation = $2",
                               name, r["generation"], state)
        log.info("dropped the shadow tables of %s rebuild #%d (%s)", name, r["generation"],
                 state.lower())


async def diff_summary(conn: asyncpg.Connection, logical: Sequence[str],
                       new: Mapping[str, str]) -> list[str]:
    """Row counts and sums of numeric columns, live vs rebuilt, one line per table."""
    lines = []
    for table in logical:
        cols = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = $1 AND data_type = 'numeric'"
            " ORDER BY ordinal_position", table)]
        sums = ", ".join(f"sum({quote_ident(c)})" for c in cols)
        query = "SELECT count(*)" + (f", {sums}" if sums else "") + " FROM {}"
        old = await conn.fetchrow(query.format(quote_ident(table)))
        fresh = await conn.fetchrow(query.format(quote_ident(new[table])))
        parts = [f"rows {old[0]:,} -> {fresh[0]:,}"]
        for i, c in enumerate(cols, 1):
            parts.append(f"sum({c}) {old[i] or 0} -> {fresh[i] or 0}")
        lines.append(f"{table}: " + "; ".join(parts))
    return lines


async def rollback(conn: asyncpg.Connection, projection: Projection) -> str:
    """Swap the previous generation back in; the live projector catches it up."""
    row = await conn.fetchrow(
        "SELECT generation, prev_version, prev_checkpoints FROM rebuilds WHERE projection = $1"
        " AND state = 'SWAPPED' ORDER BY generation DESC LIMIT 1", projection.name)
    if row is None or row["prev_checkpoints"] is None:
        raise ConfigError(f"{projection.name} has no previous generation to roll back to")
    missing = [t for t in projection.tables if not await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", quote_ident(t + PREV))]
    if missing:
        raise ConfigError(f"the previous tables of {projection.name} were dropped "
                          f"({', '.join(missing)}): nothing to roll back to")
    cps = orjson.loads(row["prev_checkpoints"]) if isinstance(
        row["prev_checkpoints"], str | bytes) else row["prev_checkpoints"]
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", live_lock_key(projection.name))
        for t in projection.tables:
            await rename_table(conn, t, t + "__swap")
            await rename_table(conn, t + PREV, t)
            await rename_table(conn, t + "__swap", t + PREV)
        await conn.execute("DELETE FROM projector_checkpoints WHERE projection = $1",
                           projection.name)
        await conn.execute(
            "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
            " SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o)",
            projection.name, [c[0] for c in cps], [c[1] for c in cps], [c[2] for c in cps])
        await conn.execute("UPDATE projections SET version = $2, updated_at = now()"
                           " WHERE name = $1", projection.name, row["prev_version"])
        await conn.execute("UPDATE rebuilds SET state = 'ROLLED_BACK' WHERE projection = $1"
                           " AND generation = $2", projection.name, row["generation"])
        await notify_swap(conn, list(projection.tables))
    return f"{projection.name}: rolled back to version {row['prev_version']}"


async def drop_old(conn: asyncpg.Connection, projection: Projection) -> int:
    dropped = 0
    for t in projection.tables:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote_ident(t + PREV)):
            await conn.execute(f"DROP TABLE {quote_ident(t + PREV)}")
            dropped += 1
    return dropped


async def cancel(conn: asyncpg.Connection, name: str) -> str:
    """Ask a running rebuild to stop; clean up after one that died."""
    running = await conn.fetchval("SELECT count(*) FROM rebuilds WHERE projection = $1"
                                  " AND state = 'RUNNING'", name)
    if not running:
        return f"no rebuild of {name} is running"
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", rebuild_lock_key(name)):
        try:  # nobody holds it: the rebuild died; clean up now
            await _drop_abandoned(conn, name, "CANCELLED")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", rebuild_lock_key(name))
        return f"cancelled: dropped the shadow tables of {name}"
    await conn.execute("UPDATE rebuilds SET cancel_requested = true WHERE projection = $1"
                       " AND state = 'RUNNING'", name)
    return f"asked the running rebuild of {name} to stop"
