"""`projector status`: the table, --json and the exit codes operators script against."""

from __future__ import annotations

import asyncio
import json

import pytest
from enginekit import migrated_pool, running, send, settings_for, simulate, wait_caught_up

from projector.cli import main
from projector.engine import Engine
from projector.projections import ALL


async def _status(capsys: pytest.CaptureFixture[str], pg_dsn: str, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--database-url", pg_dsn, "status", *args])
    return code, capsys.readouterr().out


async def test_status_reports_lag_state_and_exit_codes(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    records = simulate(topics, orders=200, seed=3, invalid=0.05)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
        async with running(engine):
            await wait_caught_up(engine, 30)
            await asyncio.sleep(1.5)  # a status round publishes the log ends

        code, out = await _status(capsys, pg_dsn, "--json")
        assert code == 0
        data = {p["name"]: p for p in json.loads(out)}
        assert set(data) == {"orders", "timeline"}
        for p in data.values():
            assert p["state"] == "LIVE" and p["lag"] == 0 and p["version"] == 1
            assert len(p["partitions"]) == 30
            assert sum(max(0, x["checkpoint"]) for x in p["partitions"]) == len(records)
            assert p["dead_letters"] == sum(
                1 for r in records if r.expect and r.expect.value != "unknown_event_type")

        code, out = await _status(capsys, pg_dsn)
        assert code == 0 and "orders  v1  LIVE" in out and "dead letters" in out

        # Lag above --max-lag: exit 1. (The log end moved on without a projector.)
        async with pool.acquire() as conn:
            await conn.execute("UPDATE partition_status SET end_offset = end_offset + 50"
                               " WHERE partition = 0")
        assert (await _status(capsys, pg_dsn, "--max-lag", "100"))[0] == 1
        assert (await _status(capsys, pg_dsn, "--max-lag", "10000"))[0] == 0

        # A refused partition makes the projection FAILED: exit 1.
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO refused_partitions (projection, topic, partition, checkpoint,"
                " reason) VALUES ('orders', $1, 0, 5, 'checkpoint is above the log end')",
                topics[0])
        code, out = await _status(capsys, pg_dsn)
        assert code == 1 and "orders  v1  FAILED" in out and "REFUSED" in out
    finally:
        await pool.close()


async def test_status_shows_a_running_rebuild(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = await migrated_pool(pg_dsn)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO rebuilds (projection, generation, version, state, tables, progress)"
                " VALUES ('orders', 3, 1, 'RUNNING', '{}', $1::jsonb)",
                json.dumps({"phase": "loading", "done": 250, "total": 1000,
                            "events_per_second": 5000.0, "eta_s": 0.15, "partitions": []}))
        code, out = await _status(capsys, pg_dsn)
        assert code == 0 and "REBUILDING #3: loading 250/1,000 (25%)" in out
        code, out = await _status(capsys, pg_dsn, "--json")
        orders = next(p for p in json.loads(out) if p["name"] == "orders")
        assert orders["rebuild"]["done"] == 250 and orders["rebuild"]["generation"] == 3
    finally:
        await pool.close()
