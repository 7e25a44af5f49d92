"""Runs the engine in a process of its own until a target position, then prints figures.

Its own process, so that its peak RSS is the projector's, not the publisher's.
Usage: engine_worker.py DSN BOOTSTRAP TOPICS_CSV TARGET_EVENTS_PER_TOPIC_JSON [ingest]

``ingest``: instead of the read models, one projection that writes nothing, so the
figure is what reading, decoding, batching and checkpoints alone allow: the ceiling
of one projector process on this machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from projector.db import create_pool, migrate
from projector.engine import Engine
from projector.gc_tuning import tune_gc
from projector.projection import Positioned, Projection
from projector.projections import ALL
from projector.runtime import run
from projector.settings import Settings


class IngestOnly:
    """A projection that takes every batch and writes nothing."""

    name = "ingest"
    version = 1
    tables: tuple[str, ...] = ()

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        return []

    async def apply(self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]) -> set[str]:
        return set()


async def main(dsn: str, bootstrap: str, topics: list[str], target: dict[str, int],
               projections: tuple[Projection, ...] = ALL) -> None:
    # PROJECTOR_* variables apply, as they do to `projector run` (PROJECTOR_BATCH_MAX_EVENTS...).
    settings = Settings.from_env(os.environ, database_url=dsn, kafka_bootstrap_servers=bootstrap,
                                 topics=tuple(topics))
    pool = await create_pool(dsn, min_size=1, max_size=4)
    if projections is not ALL:
        async with pool.acquire() as conn:
            await migrate(conn, projections)
    engine = Engine(settings, pool, projections, group_id=None)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    tune_gc()  # as `projector run` does
    stopping = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(engine.run(stopping))
    goal = sum(target.values())
    while True:
        await asyncio.sleep(0.05)
        if task.done():
            task.result()
            raise SystemExit("engine stopped early")
        pos = engine.positions[projections[0].name]
        if pos and sum(max(0, o) for o in pos.values()) >= goal:
            break
    elapsed = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    stopping.set()
    await task
    await pool.close()
    commits = list(engine.commit_log)
    lat = sorted(c[0] for c in commits)
    print(json.dumps({
        "records": goal,
        "seconds": elapsed,
        "records_per_s": goal / elapsed,
        "batches": engine.batches_committed,
        "mean_batch_records": goal / max(1, engine.batches_committed),
        "commit_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "commit_p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }))


if __name__ == "__main__":
    # On the event loop `projector run` uses (uvloop when installed).
    chosen = (IngestOnly(),) if sys.argv[5:] == ["ingest"] else ALL
    run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), json.loads(sys.argv[4]), chosen))
