"""Fault injection on `projector run` processes: kill -9, SIGTERM, two instances in a group.

Few and sharp: each test runs real processes against the real servers.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest
from enginekit import send, simulate, valid_events
from readmodels import assert_tables_match

from projector.db import create_pool, migrate
from projector.projections import ALL
from projector.simulator import Record


def _env(pg_dsn: str, kafka_bootstrap: str, topics: Sequence[str], group: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=pg_dsn, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
               PROJECTOR_TOPICS=",".join(topics), PROJECTOR_GROUP_ID=group,
               PROJECTOR_SESSION_TIMEOUT_MS="6000", PROJECTOR_BATCH_MAX_EVENTS="2000",
               LOG_LEVEL="INFO", PROJECTOR_METRICS_PORT="0")
    return env


def _start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "projector.cli", "run"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)


async def _progress(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """Per (projection, topic): the sum of next offsets, i.e. records consumed."""
    rows = await conn.fetch("SELECT projection, topic, sum(greatest(next_offset, 0)) AS n"
                            " FROM projector_checkpoints GROUP BY 1, 2")
    return {(r["projection"], r["topic"]): int(r["n"]) for r in rows}


def _target(records: Sequence[Record]) -> dict[tuple[str, str], int]:
    per_topic = Counter(r.topic for r in records)
    return {(p.name, t): n for p in ALL for t, n in per_topic.items()}


async def _wait_for(conn: asyncpg.Connection, done: object, timeout_s: float,
                    proc: subprocess.Popen[bytes] | None = None, log_path: Path | None = None) -> None:
    assert callable(done)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if done(await _progress(conn)):
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path else ""
            raise AssertionError(f"projector run exited with {proc.returncode}:\n{tail}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"no progress condition within {timeout_s} s: {await _progress(conn)}")


@pytest.mark.slow
async def test_kill_9_at_random_moments_then_sigterm_loses_and_doubles_nothing(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], tmp_path: Path
) -> None:
    rng = random.Random(20261123)
    records = simulate(topics, orders=17_500, seed=77, duplicates=0.02, invalid=0.005,
                       reorder=True)
    assert len(records) >= 100_000
    await send(records, kafka_bootstrap)
    target = _target(records)
    env = _env(pg_dsn, kafka_bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}")
    log_path = tmp_path / "run.log"
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn, ALL)
    try:
        async with pool.acquire() as conn:
            total = sum(target.values())
            for _ in range(4):
                before = sum((await _progress(conn)).values())
                proc = _start(env, log_path)
                # Kill it while it is working, at a random point of the run: once it has
                # committed 2-8% more of it (in progress, not time: however fast it runs,
                # four kills leave the run unfinished), and a moment later.
                goal = before + rng.uniform(0.02, 0.08) * total
                await _wait_for(conn, lambda p, g=goal: sum(p.values()) > g, 120, proc, log_path)
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            progress = await _progress(conn)
            assert progress != target, "the run finished before the last kill: make it longer"

            # A graceful stop mid-run: exit code 0 and no error noise.
            proc = _start(env, log_path)
            mark = log_path.stat().st_size
            before = sum(progress.values())
            await _wait_for(conn, lambda p: sum(p.values()) > before, 120, proc, log_path)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            text = log_path.read_text()[mark:]
            assert "Traceback" not in text and " ERROR " not in text, text[-3000:]

            proc = _start(env, log_path)
            await _wait_for(conn, lambda p: p == target, 240, proc, log_path)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            await assert_tables_match(conn, valid_events(records))
            letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
            assert letters == sum(1 for r in records if r.expect is not None
                                  and r.expect.value != "unknown_event_type")
    finally:
        await pool.close()


@pytest.mark.slow
async def test_two_instances_share_the_partitions(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], tmp_path: Path
) -> None:
    records = simulate(topics, orders=4000, seed=31, duplicates=0.05, reorder=True)
    env = _env(pg_dsn, kafka_bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}")
    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn, ALL)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start(env, logs[0]), _start(env, logs[1])]
    try:
        await send(records, kafka_bootstrap)
        async with pool.acquire() as conn:
            await _wait_for(conn, lambda p: p == _target(records), 240)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                assert proc.wait(30) == 0
            await assert_tables_match(conn, valid_events(records))
        for path in logs:
            text = path.read_text()
            assert "assigned" in text, text[-2000:]
            assert "Traceback" not in text, text[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        await pool.close()
