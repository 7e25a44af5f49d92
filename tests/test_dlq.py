"""`projector dlq`: list, show, replay after fixing the cause, purge."""

from __future__ import annotations

import asyncio
import json

import pytest
from enginekit import (
    Exploding,
    migrated_pool,
    running,
    send,
    settings_for,
    simulate,
    valid_events,
    wait_caught_up,
)
from readmodels import assert_tables_match

from projector.cli import main
from projector.engine import Engine
from projector.projections.order_timeline import TimelineProjection


async def _cli(capsys: pytest.CaptureFixture[str], dsn: str, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--database-url", dsn, "dlq", *args])
    return code, capsys.readouterr().out


async def test_replay_after_the_fix_applies_and_removes_entries(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    records = simulate(topics, orders=150, seed=8, invalid=0.05)
    events = valid_events(records)
    poison = {events[3].event_id, events[60].event_id}
    await send(records, kafka_bootstrap)
    projections = (Exploding(poison), TimelineProjection())  # the bug
    pool = await migrated_pool(pg_dsn, projections)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, projections,
                        group_id=None)
        async with running(engine):
            await wait_caught_up(engine, 30)

        code, out = await _cli(capsys, pg_dsn, "list", "--projection", "orders", "--json")
        failed = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and {f["event_id"] for f in failed} == poison
        assert all(f["reason"] == "projection_error" for f in failed)

        code, out = await _cli(capsys, pg_dsn, "show", str(failed[0]["id"]))
        shown = json.loads(out)
        assert code == 0 and shown["event_id"] in poison and shown["payload"].startswith("{")

        # The fix is deployed (the CLI uses the real projections): replay them.
        code, out = await _cli(capsys, pg_dsn, "replay", *(str(f["id"]) for f in failed))
        assert code == 0 and "replayed 2, still failing 0" in out
        async with pool.acquire() as conn:
            await assert_tables_match(conn, events)
            left = await conn.fetch("SELECT reason, attempts FROM dead_letters")
        assert left and all(r["reason"] != "projection_error" for r in left)

        # Decoder rejections cannot be fixed by replaying: they stay, with the new error.
        code, out = await _cli(capsys, pg_dsn, "replay", "--all", "--reason", "invalid_json")
        assert code == 1 and "replayed 0" in out
        async with pool.acquire() as conn:
            attempts = await conn.fetch(
                "SELECT attempts, error FROM dead_letters WHERE reason = 'invalid_json'")
        assert attempts and all(r["attempts"] == 1 and r["error"] for r in attempts)

        code, out = await _cli(capsys, pg_dsn, "replay", "999999")
        assert code == 2
        code, out = await _cli(capsys, pg_dsn, "purge", "--before", "2000-01-01")
        assert code == 0 and "purged 0" in out
        code, out = await _cli(capsys, pg_dsn, "purge", "--before", "2999-01-01")
        assert code == 0 and f"purged {len(left)}" in out
        code, out = await _cli(capsys, pg_dsn, "list")
        assert "no dead letters" in out
    finally:
        await pool.close()
