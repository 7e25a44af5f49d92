"""One process of a parallel rebuild's load: a share of the partitions, into the shadow tables.

The parent (:class:`projector.rebuild.Rebuild` with ``workers > 1``) starts one
such process per share, with a JSON spec as its only argument. Each loads the
partitions whose number is ``index`` modulo ``count`` (an order's events share a
partition number across topics when producers key by order_id, so the shares
mostly write different orders; where they do not, the order rows are written
compare-and-set and the aggregates by addition, so concurrent writers stay
exact). It prints its positions and log ends as a JSON line about twice a
second, and exits 0 once within ``lag`` events of the ends it sees, or at
once if the parent dies (a killed rebuild leaves no writer behind).

    python -m projector.rebuild_worker '{"database_url": ..., "share": [0, 2], ...}'
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson

from projector import runtime
from projector.checkpoints import TP
from projector.db import create_pool
from projector.engine import Engine
from projector.gc_tuning import tune_gc
from projector.logs import configure
from projector.settings import Settings


def _key(tp: TP) -> str:
    return f"{tp[1]}|{tp[0]}"


def parse_key(key: str) -> TP:
    partition, _, topic = key.partition("|")
    return topic, int(partition)


async def run(spec: dict[str, Any]) -> None:
    from projector.projections import ALL
    from projector.rebuild import Shadow

    settings = Settings(database_url=spec["database_url"],
                        kafka_bootstrap_servers=spec["bootstrap"], topics=tuple(spec["topics"]),
                        batch_max_events=spec["batch_max_events"])
    index, count = spec["share"]
    by_name = {p.name: p for p in ALL}
    shadows = [Shadow(type(by_name[s["projection"]])(), s["name"]) for s in spec["shadows"]]
    pool = await create_pool(spec["database_url"], min_size=1, max_size=len(shadows) + 1)
    engine = Engine(settings, pool, shadows, group_id=None, shadow=True,
                    client_id=f"projector-rebuild-{index}",
                    physical={s["name"]: s["tables"] for s in spec["shadows"]},
                    only=lambda tp: tp[1] % count == index)
    tune_gc()
    parent = os.getppid()
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    last = 0.0
    try:
        while True:
            await asyncio.sleep(0.1)
            if os.getppid() != parent:
                # The rebuild was killed: its session locks are gone, and the next one
                # drops these tables. Leave at once; PostgreSQL rolls back the batch.
                os._exit(3)
            if task.done():
                task.result()
                raise SystemExit("the rebuild worker's consumer stopped unexpectedly")
            ends = engine.log_ends()
            near = (engine.ready.is_set() and ends and None not in ends.values()
                    and sum(engine.lag().values()) <= spec["lag"])
            if near or time.monotonic() - last >= 0.5:
                last = time.monotonic()
                # The slowest shadow's positions: what the share has surely done.
                positions = {_key(tp): min(max(0, engine.positions[s.name].get(tp, 0))
                                           for s in shadows) for tp in ends}
                line = {"positions": positions, "ends": {_key(tp): e for tp, e in ends.items()}}
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
            if near:
                break
    finally:
        stopping.set()
        await task
        await pool.close()


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    configure(spec.get("log_level", "WARNING"), "text")
    runtime.run(run(spec))


if __name__ == "__main__":
    main()
