"""Projection benchmark: pre-decoded simulator batches applied straight to PostgreSQL.

No broker and no engine: the simulator's records are decoded up front and cut
into batches the way the engine's consumer delivers them (a fetch returns a
chunk of ~2 MB per partition, and a batch of ``--batch`` events is mostly one
or two such chunks, so it holds one event of ~5,000 distinct orders). Each
batch is applied by OrdersProjection and TimelineProjection in one transaction,
each in a savepoint, as the engine does. Prints, per projection, the Python
time per event (the apply's wall time minus its statements'), and per
statement the client-side time (parameter encoding, round trip, execution) and,
when pg_stat_statements can be loaded, PostgreSQL's own execution time, per
batch; then the events/s of the whole apply loop, commits included. Figures go
to bench/results/projection.json.

    python bench/bench_projection.py [--events 200000] [--batch 5000] [--repeat 3]
        [--no-durable] [--cache-rows 20000] [--gc-threshold 50000,50,1000] [--fetch-bytes 0]
        [--profile bench/results/projection_profile.txt]

Uses the embedded PostgreSQL (durable: fsync on, as in production) unless
DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile, write_results

from projector.contracts import decode
from projector.db import create_pool, migrate
from projector.embedded import EmbeddedPostgres
from projector.events import DEFAULT_TOPICS, Event
from projector.projection import Positioned
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection
from projector.simulator import SimulationOptions, generate

EVENTS_PER_ORDER = 5.75  # what the simulator's default outcomes average
PARTITIONS = 3
FETCH_BYTES = 2 * 1024 * 1024  # the engine's max_partition_fetch_bytes


# --- the batches ------------------------------------------------------------------------


def batches(events: int, batch_size: int, fetch_bytes: int = FETCH_BYTES) -> list[list[Positioned]]:
    """Decoded events in engine-like batches (see the module docstring).

    ``fetch_bytes`` is what one partition hands over per fetch round; 0 keeps
    the simulator's own order (publish order: what a consumer that keeps its
    partitions aligned in time would see, several events per order per batch).
    """
    options = SimulationOptions(orders=int(events / EVENTS_PER_ORDER), seed=1,
                                duplicates=0.01, reorder=True)
    logs: dict[tuple[str, int], list[tuple[Positioned, int]]] = defaultdict(list)
    published: list[Positioned] = []
    for r in generate(options):
        # Same key, same partition (the real partitioner is murmur2; any stable hash will do).
        partition = zlib.crc32(r.key) % PARTITIONS if r.key else 0
        log = logs[(r.topic, partition)]
        event = decode(r.value, r.key, r.headers)
        if isinstance(event, Event):
            positioned = Positioned(event, r.topic, partition, len(log))
            log.append((positioned, len(r.value)))
            published.append(positioned)
    if not fetch_bytes:
        return [published[i:i + batch_size] for i in range(0, len(published), batch_size)]
    # Fetch rounds: every partition, topic by topic, hands over up to fetch_bytes.
    cursors = {tp: 0 for tp in logs}
    order = sorted(logs, key=lambda tp: (DEFAULT_TOPICS.index(tp[0]), tp[1]))
    stream: list[Positioned] = []
    while any(cursors[tp] < len(logs[tp]) for tp in order):
        for tp in order:
            log, at, size = logs[tp], cursors[tp], 0
            while at < len(log) and size < fetch_bytes:
                stream.append(log[at][0])
                size += log[at][1]
                at += 1
            cursors[tp] = at
    return [stream[i:i + batch_size] for i in range(0, len(stream), batch_size)]


# --- timing the statements ----------------------------------------------------------------

_TARGET = re.compile(r'(INSERT INTO|UPDATE|DELETE FROM|FROM|JOIN|COPY)\s+(?:\w+\.)?"?([a-z_]+)"?',
                     re.IGNORECASE)


def label(sql: str) -> str:
    """``table verb`` for a statement, e.g. ``order_summary INSERT``."""
    # The first target that names a read table (unnest(...) and temp tables are skipped).
    for verb, name in _TARGET.findall(sql):
        if name in TABLES:
            kind = "SELECT" if verb.upper() in ("FROM", "JOIN") else verb.split()[0].upper()
            if kind == "SELECT" and sql.lstrip().upper().startswith("INSERT"):
                continue
            return f"{name} {kind}"
    return sql.split()[0].upper()


TABLES = ("order_summary", "customer_summary", "product_sales", "daily_sales", "order_timeline")


class TimedConnection:
    """Passes everything to ``conn``; times the statement calls by :func:`label`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.total = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def _timed(self, key: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[key] += elapsed
            self.calls[key] += 1
            self.total += elapsed

    async def fetch(self, sql: str, *args: Any) -> Any:
        return await self._timed(label(sql), self._conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._timed(label(sql), self._conn.fetchval(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._timed(label(sql), self._conn.fetchrow(sql, *args))

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self._timed(label(sql), self._conn.execute(sql, *args))

    async def executemany(self, sql: str, args: Any) -> Any:
        return await self._timed(label(sql), self._conn.executemany(sql, args))

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> Any:
        return await self._timed(f"{table} COPY", self._conn.copy_records_to_table(table, **kwargs))


# --- the run ------------------------------------------------------------------------------


async def _stat_statements(conn: asyncpg.Connection) -> bool:
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    return True


async def _server_times(conn: asyncpg.Connection) -> dict[str, float]:
    rows = await conn.fetch("SELECT query, total_exec_time FROM pg_stat_statements")
    out: dict[str, float] = defaultdict(float)
    for query, ms in rows:
        key = label(query)
        if key.split()[0] in TABLES:
            out[key] += ms
    return out


async def run(dsn: str, work: Sequence[list[Positioned]], cache_rows: int,
              profile: bool) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    orders, timeline = OrdersProjection(cache_rows), TimelineProjection()
    projections = (orders, timeline)
    async with pool.acquire() as raw:
        await migrate(raw, projections)
        has_stats = await _stat_statements(raw)
        conn = TimedConnection(raw)
        physical = {t: t for p in projections for t in p.tables}
        python = {p.name: 0.0 for p in projections}
        commits: list[float] = []
        batch_seconds: list[float] = []
        hits = rows = 0
        profiler = cProfile.Profile() if profile else None
        wal_start = await raw.fetchval("SELECT pg_current_wal_lsn()")
        started = time.perf_counter()
        for batch in work:
            t0 = time.perf_counter()
            ids = sorted({p.event.order_id for p in batch})
            hits += len(orders.cache.lookup("order_summary", ids))
            rows += len(ids)
            tx = raw.transaction()
            await tx.start()
            for projection in projections:
                before = conn.total
                p0 = time.perf_counter()
                if profiler:
                    profiler.enable()
                async with raw.transaction():  # the engine's savepoint
                    await projection.apply(conn, batch, physical)
                if profiler:
                    profiler.disable()
                python[projection.name] += time.perf_counter() - p0 - (conn.total - before)
            c0 = time.perf_counter()
            await tx.commit()
            commits.append(time.perf_counter() - c0)
            batch_seconds.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        wal = await raw.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", wal_start)
        server = await _server_times(raw) if has_stats else {}
        hot = await raw.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'order_summary'")
        widths = await raw.fetchval("SELECT avg(pg_column_size(o.*)) FROM order_summary AS o")
    await pool.close()
    profiled = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(45)
        profiled = out.getvalue()
    events = sum(len(b) for b in work)
    n = len(work)
    return {
        "events": events,
        "batches": n,
        "events_per_s": events / elapsed,
        "batch_p50_ms": 1000 * percentile(batch_seconds, 0.5),
        "commit_p50_ms": 1000 * percentile(commits, 0.5),
        "distinct_orders_per_batch": rows / n,
        "wal_mb_per_batch": float(wal) / n / 1e6,
        "order_row_bytes": float(widths or 0),
        "order_updates_hot": f"{hot['n_tup_hot_upd']}/{hot['n_tup_upd']}" if hot else "",
        "cache_hit_rate": hits / max(1, rows),
        "python_us_per_event": {k: 1e6 * v / events for k, v in python.items()},
        "client_ms_per_batch": {k: 1000 * v / n for k, v in sorted(conn.seconds.items())},
        "server_ms_per_batch": {k: v / n for k, v in sorted(server.items())},
        "calls_per_batch": {k: v / n for k, v in sorted(conn.calls.items())},
        "profile": profiled,
    }


async def _fresh_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rpartition("/")[0] + f"/{name}"


@contextmanager
def _server(durable: bool) -> Iterator[str]:
    """DATABASE_URL, or an embedded PostgreSQL with pg_stat_statements loaded."""
    admin = os.environ.get("DATABASE_URL")
    if admin:
        yield admin
        return
    base = Path(tempfile.mkdtemp(prefix="projector-bench-"))
    os.chmod(base, 0o755)  # the server runs as another user when we are root
    pg = EmbeddedPostgres(base / "pg", durable=durable, preferred_port=0)
    try:
        pg.start()

        async def preload() -> None:
            conn = await asyncpg.connect(pg.url)
            try:
                await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            finally:
                await conn.close()

        # A restart loads it; without it the figures just lack the server column.
        asyncio.run(preload())
        pg.stop()
        pg.start()
        yield pg.url
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def report(figures: dict[str, Any]) -> None:
    f = figures
    print(f"\n{f['events']:,} events in {f['batches']} batches; {f['distinct_orders_per_batch']:,.0f} "
          f"orders per batch; row cache hits {100 * f['cache_hit_rate']:.0f}%")
    for name, us in f["python_us_per_event"].items():
        print(f"  python  {name:<28} {us:8.1f} us/event")
    print(f"  {'statement':<36} {'client ms/batch':>16} {'server ms/batch':>16} {'calls':>6}")
    for key, ms in f["client_ms_per_batch"].items():
        server = f["server_ms_per_batch"].get(key)
        shown = f"{server:16.1f}" if server is not None else f"{'-':>16}"
        print(f"  {key:<36} {ms:16.1f} {shown} {f['calls_per_batch'][key]:6.2f}")
    print(f"  commit p50 {f['commit_p50_ms']:.1f} ms; batch p50 {f['batch_p50_ms']:.1f} ms; "
          f"WAL {f['wal_mb_per_batch']:.1f} MB/batch; order_summary rows {f['order_row_bytes']:.0f} B; "
          f"HOT updates {f['order_updates_hot']}")
    print(f"  apply loop {f['events_per_s']:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--cache-rows", type=int, default=20_000)
    parser.add_argument("--fetch-bytes", type=int, default=FETCH_BYTES,
                        help="bytes per partition per fetch round (default 2 MiB, the engine's); "
                             "0: publish order, as a consumer keeping partitions aligned in time")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh database")
    parser.add_argument("--no-durable", action="store_true", help="fsync off")
    parser.add_argument("--gc-threshold", metavar="G0,G1,G2",
                        help="gc.set_threshold() for the run (default: Python's)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the applies here")
    args = parser.parse_args()

    t0 = time.perf_counter()
    work = batches(args.events, args.batch, args.fetch_bytes)
    print(f"decoded {sum(map(len, work)):,} events into {len(work)} batches "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    # The decoded backlog stays alive for the whole run, which a consumer's
    # batches would not: keep it out of the collector's way.
    gc.freeze()
    if args.gc_threshold:
        gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))

    runs: list[dict[str, Any]] = []
    with _server(not args.no_durable) as url:
        for n in range(args.repeat):
            dsn = asyncio.run(_fresh_database(url, "bench_projection"))
            runs.append(asyncio.run(run(dsn, work, args.cache_rows, args.profile is not None)))
            print(f"run {n + 1}: {runs[-1]['events_per_s']:,.0f} events/s", flush=True)
    best = max(runs, key=lambda f: float(f["events_per_s"]))
    rates = sorted(float(f["events_per_s"]) for f in runs)
    profiled = best.pop("profile")
    if args.profile:
        args.profile.write_text(profiled)
    report(best)
    if len(runs) > 1:
        print(f"  best of {len(runs)} runs above; median {rates[len(rates) // 2]:,.0f} events/s")
    for f in runs:
        f.pop("profile", None)
    path = write_results("projection", {"durable": not args.no_durable, "gc_threshold": args.gc_threshold,
                                        "fetch_bytes": args.fetch_bytes, "best": best,
                                        "runs_events_per_s": rates})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
