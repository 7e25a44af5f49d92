"""Blue/green rebuilds against the real servers: serving throughout, swap, rollback, refusal."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition
from enginekit import migrated_pool, running, send, settings_for, simulate, valid_events, wait_caught_up
from readmodels import assert_tables_match

from projector.engine import NOTIFY_CHANNEL, Engine
from projector.errors import LogTruncatedError
from projector.projections import ALL
from projector.rebuild import Rebuild, rollback

PARTITIONS = 30


async def _query_loop(dsn: str, stop: asyncio.Event, floor: int, seen: list[int],
                      errors: list[BaseException]) -> None:
    """A client reading while the rebuild runs: every query must succeed, never see fewer rows."""
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            try:
                n = await conn.fetchval("SELECT count(*) FROM order_summary")
                await conn.fetchval("SELECT sum(total_spent) FROM customer_summary")
                seen.append(n)
                assert n >= floor, f"saw {n} orders, fewer than the {floor} at the start"
            except BaseException as exc:
                errors.append(exc)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "two-processes"])
async def test_rebuild_serves_throughout_and_swaps_in_an_equal_model(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], workers: int
) -> None:
    first = simulate(topics, orders=1500, seed=51, duplicates=0.05, invalid=0.01, reorder=True)
    second = simulate(topics, orders=500, seed=52)
    await send(first, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    settings = settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=1000)
    notes: list[dict[str, Any]] = []
    listener = await asyncpg.connect(pg_dsn)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *a: notes.append(orjson.loads(a[3])))
    try:
        live = Engine(settings, pool, ALL, group_id=None, client_id="live")
        async with running(live):
            await wait_caught_up(live, PARTITIONS)
            async with pool.acquire() as conn:
                floor = await conn.fetchval("SELECT count(*) FROM order_summary")
            stop, seen, errors = asyncio.Event(), [], []
            reader = asyncio.create_task(_query_loop(pg_dsn, stop, floor, seen, errors))
            feeder = asyncio.create_task(send(second, kafka_bootstrap))  # live keeps moving
            progress: list[Any] = []
            plans = await Rebuild(settings, pool, ALL, batch_max_events=3000, workers=workers,
                                  on_progress=progress.append).run()
            await feeder
            await wait_caught_up(live, PARTITIONS)
            stop.set()
            await reader
        assert not errors, errors[:3]
        assert len(seen) > 10 and min(seen) >= floor
        assert {p.phase for p in progress} >= {"loading", "cut-over"}
        assert progress[-1].done == progress[-1].total > 0
        assert all(len(p.summary) == len(p.projection.tables) for p in plans)
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(first + second))
            states = await conn.fetch("SELECT projection, state FROM rebuilds")
            assert {(r["projection"], r["state"]) for r in states} == {
                ("orders", "SWAPPED"), ("timeline", "SWAPPED")}
            assert await conn.fetchval("SELECT to_regclass('order_summary__prev')") is not None
            shadows = await conn.fetchval(
                "SELECT count(*) FROM projector_checkpoints WHERE projection LIKE '%#r%'")
            assert shadows == 0
        assert any(n.get("swapped") for n in notes)

        # Rollback: the previous tables come back and the live projector catches them up.
        async with pool.acquire() as conn:
            await rollback(conn, ALL[0])
        live = Engine(settings, pool, ALL, group_id=None, client_id="live2")
        async with running(live):
            await wait_caught_up(live, PARTITIONS)
        async with pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT state FROM rebuilds WHERE projection = 'orders'") == "ROLLED_BACK"
            await assert_tables_match(conn, valid_events(first + second))
    finally:
        await listener.close()
        await pool.close()


async def test_rebuild_refuses_a_truncated_log_unless_partial(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=100, seed=3)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    settings = settings_for(pg_dsn, kafka_bootstrap, topics)

    async def retention(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        # The embedded broker cannot delete records (no DeleteRecords): stand in
        # for retention having removed the first 3 events of one partition.
        return {tp: (3 if (tp.topic, tp.partition) == (topics[0], 0) else 0) for tp in tps}

    try:
        job = Rebuild(settings, pool, ALL)
        job.log_starts = retention
        with pytest.raises(LogTruncatedError, match="allow-partial"):
            await job.run()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM rebuilds") == 0
        job = Rebuild(settings, pool, ALL[1:], allow_partial=True)
        job.log_starts = retention
        await job.run()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT partial FROM projections WHERE name = 'timeline'")
            assert await conn.fetchval("SELECT partial FROM rebuilds") is True
    finally:
        await pool.close()


def _env(dsn: str, bootstrap: str, topics: tuple[str, ...]) -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=dsn, KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                PROJECTOR_TOPICS=",".join(topics), PROJECTOR_GROUP_ID=f"g-{uuid.uuid4().hex[:6]}",
                PROJECTOR_SESSION_TIMEOUT_MS="6000", PROJECTOR_METRICS_PORT="0")


def _workers_of(topic: str) -> list[int]:
    """Live rebuild worker processes whose spec names ``topic``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "projector.rebuild_worker" in cmdline and topic in cmdline and state != "Z":
            found.append(int(pid))
    return found


@pytest.mark.slow
async def test_killed_rebuilds_leave_live_tables_serving_and_a_new_one_completes(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], tmp_path: Path
) -> None:
    records = simulate(topics, orders=3000, seed=61, duplicates=0.02)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    settings = settings_for(pg_dsn, kafka_bootstrap, topics)
    try:
        live = Engine(settings, pool, ALL, group_id=None)
        async with running(live):
            await wait_caught_up(live, PARTITIONS)
        env = _env(pg_dsn, kafka_bootstrap, topics)
        rng = random.Random(5)
        log = tmp_path / "rebuild.log"
        for _ in range(3):
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "projector.cli", "rebuild", "--all", "--workers", "2",
                     "--batch-max-events", "2000"], stdout=out, stderr=subprocess.STDOUT, env=env)
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # Its loading processes leave with it: no writer outlives a killed rebuild.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while _workers_of(topics[0]) and loop.time() < deadline:
                await asyncio.sleep(0.1)
            assert not _workers_of(topics[0])
            async with pool.acquire() as conn:  # live tables untouched and serving
                await assert_tables_match(conn, valid_events(records))
        with open(log, "ab") as out:
            done = subprocess.run([sys.executable, "-m", "projector.cli", "rebuild", "--all"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, timeout=240,
                                  check=False)
        assert done.returncode == 0, log.read_text()[-3000:]
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
            leftovers = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename LIKE '%\\_\\_r%'")
            assert leftovers == 0
            # The last rebuild of each swapped (a killed one may have finished first).
            newest = await conn.fetch(
                "SELECT projection, state FROM rebuilds r WHERE generation ="
                " (SELECT max(generation) FROM rebuilds WHERE projection = r.projection)")
            assert {(r["projection"], r["state"]) for r in newest} == {
                ("orders", "SWAPPED"), ("timeline", "SWAPPED")}
            assert not await conn.fetchval("SELECT count(*) FROM rebuilds WHERE state = 'RUNNING'")
    finally:
        await pool.close()


@pytest.mark.slow
async def test_a_version_bump_makes_run_rebuild_by_itself(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], tmp_path: Path
) -> None:
    records = simulate(topics, orders=500, seed=71)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    async with pool.acquire() as conn:
        # The tables were built by an older version of the timeline projection.
        await conn.execute("UPDATE projections SET version = 0 WHERE name = 'timeline'")
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "projector.cli", "run"], stdout=out,
                                stderr=subprocess.STDOUT,
                                env=_env(pg_dsn, kafka_bootstrap, topics))
    try:
        async with pool.acquire() as conn:
            for _ in range(600):
                await asyncio.sleep(0.2)
                assert proc.poll() is None, log.read_text()[-3000:]
                version = await conn.fetchval(
                    "SELECT version FROM projections WHERE name = 'timeline'")
                lag = await conn.fetchval(
                    "SELECT count(*) FROM projector_checkpoints WHERE next_offset < 0")
                if version == 1 and await conn.fetchval(
                        "SELECT count(*) FROM order_timeline") == len(
                            {e.event_id for e in valid_events(records)}):
                    break
            assert version == 1, log.read_text()[-3000:]
            assert await conn.fetchval("SELECT state FROM rebuilds") == "SWAPPED"
            del lag
        assert "rebuilding blue/green" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        await pool.close()
