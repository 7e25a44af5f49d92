"""Runs the engine in a process of its own until a target position, then prints figures.

Its own process, so that its peak RSS is the projector's, not the publisher's.
Usage: engine_worker.py DSN BOOTSTRAP TOPICS_CSV TARGET_EVENTS_PER_TOPIC_JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from projector.db import create_pool
from projector.engine import Engine
from projector.gc_tuning import tune_gc
from projector.projections import ALL
from projector.runtime import run
from projector.settings import Settings


async def main(dsn: str, bootstrap: str, topics: list[str], target: dict[str, int]) -> None:
    # PROJECTOR_* variables apply, as they do to `projector run` (PROJECTOR_BATCH_MAX_EVENTS...).
    settings = Settings.from_env(os.environ, database_url=dsn, kafka_bootstrap_servers=bootstrap,
                                 topics=tuple(topics))
    pool = await create_pool(dsn, min_size=1, max_size=4)
    engine = Engine(settings, pool, ALL, group_id=None)
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
        pos = engine.positions["orders"]
        if pos and sum(max(0, o) for o in pos.values()) >= goal:
            break
    elapsed = time.perf_counter() - started
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
    }))


if __name__ == "__main__":
    # On the event loop `projector run` uses (uvloop when installed).
    run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), json.loads(sys.argv[4])))
