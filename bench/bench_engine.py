"""Engine benchmark: a 1,000,000-event backlog projected from empty to caught up.

Also measures, in the same run: the CPU an event costs the projector and
PostgreSQL; the same backlog read by a projection that writes nothing (the
ceiling of one projector process: reading, decoding, batching, checkpoints);
the tutorial-style consumer (bench/naive.py) on a sample, and prints the ratio.
Figures go to bench/results/engine.json.

    python bench/bench_engine.py [--events 1000000] [--naive-sample 20000] [--rebuild-workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Stack, postgres_cpu_s, stack, write_results
from naive import run_naive

from projector.db import create_pool, migrate
from projector.events import DEFAULT_TOPICS
from projector.gc_tuning import tune_gc
from projector.projections import ALL
from projector.rebuild import Rebuild
from projector.runtime import run
from projector.settings import Settings
from projector.simulator import SimulationOptions, generate, publish, topic_map_for
from projector.topics import ensure_topics

EVENTS_PER_ORDER = 5.75  # what the simulator's default outcomes average


async def _database(s: Stack, name: str) -> str:
    conn = await asyncpg.connect(s.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = s.admin_url.rpartition("/")
    dsn = f"{base}/{name}"
    pool = await create_pool(dsn, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await migrate(conn, ALL)
    await pool.close()
    return dsn


async def _publish(s: Stack, topics: tuple[str, ...], events: int) -> tuple[dict[str, int], float]:
    await ensure_topics(s.bootstrap, topics)
    options = SimulationOptions(orders=int(events / EVENTS_PER_ORDER), seed=1,
                                topic_map=topic_map_for(topics), duplicates=0.01, reorder=True)
    per_topic: Counter[str] = Counter()

    def counted():  # type: ignore[no-untyped-def]
        for r in generate(options):
            per_topic[r.topic] += 1
            yield r

    started = time.perf_counter()
    stats = await publish(counted(), s.bootstrap)
    elapsed = time.perf_counter() - started
    print(f"published {stats.sent:,} records in {elapsed:.1f} s ({stats.sent / elapsed:,.0f}/s)",
          flush=True)
    return dict(per_topic), stats.sent / elapsed


async def _rebuild(dsn: str, bootstrap: str, topics: tuple[str, ...], records: int,
                   workers: int) -> dict[str, float]:
    """A blue/green rebuild of every projection over the same log, live tables in place."""
    settings = Settings(database_url=dsn, kafka_bootstrap_servers=bootstrap, topics=topics)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    tune_gc()  # as `projector rebuild` does
    try:
        started = time.perf_counter()
        await Rebuild(settings, pool, ALL, workers=workers).run()
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return {"records": records, "seconds": elapsed, "records_per_s": records / elapsed,
            "workers": workers}


def _engine(s: Stack, database: str, topics: tuple[str, ...], per_topic: dict[str, int],
            *mode: str) -> dict[str, Any]:
    """engine_worker.py's figures over the backlog, on a new database, and the CPU an event."""
    dsn = asyncio.run(_database(s, database))
    worker = Path(__file__).resolve().parent / "engine_worker.py"
    pg_before = postgres_cpu_s()
    out = subprocess.run([sys.executable, str(worker), dsn, s.bootstrap, ",".join(topics),
                          json.dumps(per_topic), *mode], capture_output=True, text=True, check=False)
    pg_after = postgres_cpu_s()
    if out.returncode != 0:
        sys.exit(f"engine worker failed:\n{out.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    records = figures["records"]
    figures["cpu_us_per_event"] = 1e6 * figures.pop("cpu_s") / records
    # The whole run's PostgreSQL CPU (none when it is not on this machine).
    figures["postgres_cpu_us_per_event"] = (
        None if pg_before is None or pg_after is None else 1e6 * (pg_after - pg_before) / records)
    return {**figures, "dsn": dsn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--rebuild-workers", type=int, default=2,
                        help="processes loading the rebuild's shadow tables (projector rebuild --workers)")
    args = parser.parse_args()
    with stack(durable=True) as s:
        prefix = f"bench-{uuid.uuid4().hex[:6]}."
        topics = tuple(prefix + t for t in DEFAULT_TOPICS)
        per_topic, publish_rate = asyncio.run(_publish(s, topics, args.events))

        engine = _engine(s, "bench_engine", topics, per_topic)
        dsn = engine.pop("dsn")
        ingest = _engine(s, "bench_ingest", topics, per_topic, "ingest")
        ingest.pop("dsn")

        # As `projector rebuild` runs it (uvloop when installed).
        rebuild = run(_rebuild(dsn, s.bootstrap, topics, sum(per_topic.values()), args.rebuild_workers))

        naive_dsn = asyncio.run(_database(s, "bench_naive"))
        naive = asyncio.run(run_naive(naive_dsn, s.bootstrap, topics, args.naive_sample))
        # The engine commits with synchronous_commit=off (projector.db): the same baseline
        # without waiting for the WAL flush either, to show what the batching alone is worth.
        naive_async_dsn = asyncio.run(_database(s, "bench_naive_async"))
        naive_async = asyncio.run(run_naive(naive_async_dsn, s.bootstrap, topics, args.naive_sample,
                                            synchronous_commit="off"))

    ratio = engine["records_per_s"] / naive["records_per_s"]
    ratio_async = engine["records_per_s"] / naive_async["records_per_s"]
    rebuild_ratio = rebuild["records_per_s"] / engine["records_per_s"]
    print()
    print(f"engine      {engine['records']:>10,} events  {engine['records_per_s']:>10,.0f} events/s"
          f"   (target >= 50,000)")
    print(f"            batches {engine['batches']:,} of {engine['mean_batch_records']:,.0f} events;"
          f" commit p50 {engine['commit_p50_ms']:.1f} ms, p99 {engine['commit_p99_ms']:.1f} ms;"
          f" peak RSS {engine['peak_rss_mb']:.0f} MB (target < 300)")
    pg_cpu = engine["postgres_cpu_us_per_event"]
    print(f"            CPU an event: projector {engine['cpu_us_per_event']:.1f} µs"
          + ("" if pg_cpu is None else f", PostgreSQL {pg_cpu:.1f} µs")
          + f" (two cores give {2e6 / 50_000:.0f} µs an event at 50,000 events/s)")
    print(f"ingest only {ingest['records']:>10,} events  {ingest['records_per_s']:>10,.0f} events/s"
          f"   (a projection that writes nothing: reading, decoding, batching, checkpoints;"
          f" {ingest['cpu_us_per_event']:.1f} µs CPU an event)")
    print(f"naive       {naive['records']:>10,} events  {naive['records_per_s']:>10,.0f} events/s"
          f"   (one transaction per event + processed_events)")
    print(f"ratio       {ratio:>10.1f}x   (target >= 40x)")
    print(f"naive, async {naive_async['records']:>9,} events  {naive_async['records_per_s']:>10,.0f} events/s"
          f"   (the same with synchronous_commit=off, as the engine): ratio {ratio_async:.1f}x")
    print(f"rebuild     {rebuild['records']:>10,} events  {rebuild['records_per_s']:>10,.0f} events/s"
          f"   (target >= 80,000), {rebuild_ratio:.1f}x the live path (target >= 1.5x);"
          f" {rebuild['workers']} loading process(es)")
    path = write_results("engine", {"engine": engine, "ingest_only": ingest, "naive": naive, "ratio": ratio,
                                    "naive_synchronous_commit_off": naive_async,
                                    "ratio_synchronous_commit_off": ratio_async,
                                    "rebuild": rebuild, "rebuild_vs_live": rebuild_ratio,
                                    "publish_records_per_s": publish_rate})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
