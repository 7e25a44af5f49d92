"""The engine against the real servers: exactly-once effect, dead letters, fencing, retries."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import TopicPartition
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

from projector.checkpoints import FROM_LOG_START
from projector.commands._control import set_paused
from projector.embedded import EmbeddedPostgres
from projector.engine import NOTIFY_CHANNEL, Engine
from projector.errors import TransientError
from projector.events import RejectReason
from projector.projection import Positioned
from projector.projections import ALL
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection

PARTITIONS = 30  # ten topics, three partitions each


async def test_chaotic_stream_projects_exactly_the_fold(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=1500, seed=11, duplicates=0.1, invalid=0.03, reorder=True)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    notes: list[dict[str, Any]] = []
    listener = await asyncpg.connect(pg_dsn)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *a: notes.append(orjson.loads(a[3])))
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
            letters = Counter(r["reason"] for r in await conn.fetch(
                "SELECT reason FROM dead_letters WHERE projection = '*'"))
            max_seq = await conn.fetchval(
                "SELECT max(s) FROM (SELECT max(updated_seq) s FROM order_summary UNION ALL "
                "SELECT max(updated_seq) FROM order_timeline UNION ALL "
                "SELECT max(updated_seq) FROM daily_sales) x")
        invalid = Counter(r.expect for r in records if r.expect is not None)
        unknown = invalid.pop(RejectReason.UNKNOWN_EVENT_TYPE, 0)
        assert sum(invalid.values()) > 0
        assert letters == {reason.value: n for reason, n in invalid.items()}
        assert engine.unknown_skipped == unknown
        # The change feed: small payloads naming tables and the highest sequence.
        await asyncio.sleep(0.2)
        assert notes, "no NOTIFY on projector_changes"
        assert all(set(n) == {"tables", "seq"} for n in notes)
        assert set().union(*(n["tables"] for n in notes)) == {
            "order_summary", "order_timeline", "customer_summary", "product_sales", "daily_sales"}
        assert max(n["seq"] for n in notes) == max_seq
    finally:
        await listener.close()
        await pool.close()


async def test_failing_events_are_isolated_and_dead_lettered(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=400, seed=5)
    events = valid_events(records)
    poison = {events[7].event_id, events[300].event_id, events[301].event_id}
    await send(records, kafka_bootstrap)
    projections = (Exploding(poison), TimelineProjection())
    pool = await migrated_pool(pg_dsn, projections)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, projections,
                        group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
        async with pool.acquire() as conn:
            letters = await conn.fetch("SELECT projection, reason, event_id, error, value"
                                       " FROM dead_letters")
            assert {r["event_id"] for r in letters} == poison
            assert {(r["projection"], r["reason"]) for r in letters} == {("orders", "projection_error")}
            assert all("cannot project" in r["error"] and r["value"] for r in letters)
            # Everything else was applied; the timeline took the poison events too.
            good = [e for e in events if e.event_id not in poison]
            timeline = await conn.fetchval("SELECT count(*) FROM order_timeline")
            assert timeline == len({e.event_id for e in events})
            orders = await conn.fetch("SELECT order_id, event_count FROM order_summary")
            counts = Counter(e.order_id for e in {e.event_id: e for e in good}.values())
            assert {r["order_id"]: r["event_count"] for r in orders} == dict(counts)
            behind = await conn.fetchval(
                "SELECT count(*) FROM projector_checkpoints c WHERE next_offset = $1", FROM_LOG_START)
            assert behind < PARTITIONS * 2  # checkpoints moved past the poison
    finally:
        await pool.close()


class _Stale(Engine):
    """An instance that believes it still owns partitions from before another one worked."""

    async def _on_assigned(self, tps: Sequence[tuple[str, int]]) -> None:
        await super()._on_assigned(tps)
        assert self._consumer is not None
        for pos in self.positions.values():
            for tp in tps:
                pos[tp] = FROM_LOG_START
        for tp in tps:
            await self._consumer.seek_to_beginning(TopicPartition(*tp))


async def test_fencing_stops_an_instance_that_lost_its_partitions(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=600, seed=9, duplicates=0.05)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    settings = settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=300)
    try:
        # Two instances racing on the same partitions at once.
        a = Engine(settings, pool, ALL, group_id=None, client_id="a")
        b = Engine(settings, pool, ALL, group_id=None, client_id="b")
        async with running(a), running(b):
            await wait_caught_up(a, PARTITIONS)
            await wait_caught_up(b, PARTITIONS)
        # And one that is certainly stale: it must be fenced, not double-apply.
        stale = _Stale(settings, pool, ALL, group_id=None, client_id="stale")
        async with running(stale):
            await wait_caught_up(stale, PARTITIONS)
        assert stale.fenced >= 1
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
            stored = {(r["topic"], r["partition"]): r["next_offset"] for r in await conn.fetch(
                "SELECT topic, partition, next_offset FROM projector_checkpoints"
                " WHERE projection = 'orders'")}
        assert stored == {tp: stale.positions["orders"][tp] for tp in stored}
    finally:
        await pool.close()


class _Flaky(TimelineProjection):
    """The timeline, failing transiently on its first batches (a lost connection, say)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def apply(self, conn: Any, batch: Sequence[Positioned],
                    physical: Mapping[str, str]) -> set[str]:
        if self.failures:
            self.failures -= 1
            raise TransientError("connection lost (injected)")
        return await super().apply(conn, batch, physical)


async def test_each_projection_commits_and_retries_on_its_own(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    # The projections of a batch commit in transactions of their own: one
    # retrying does not undo the other's commit, and the decoder's rejections,
    # which both move past, are one dead letter each.
    records = simulate(topics, orders=300, seed=31, duplicates=0.1, invalid=0.05, reorder=True)
    await send(records, kafka_bootstrap)
    flaky = _Flaky(failures=3)
    projections = (OrdersProjection(), flaky)
    pool = await migrated_pool(pg_dsn, projections)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=400), pool,
                        projections, group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
            while engine.lag_by_projection()["timeline"]:
                await asyncio.sleep(0.05)
        assert flaky.failures == 0
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
            letters = Counter(r["reason"] for r in await conn.fetch(
                "SELECT reason FROM dead_letters WHERE projection = '*'"))
            total = await conn.fetchval("SELECT count(*) FROM dead_letters")
        invalid = Counter(r.expect for r in records if r.expect is not None)
        unknown = invalid.pop(RejectReason.UNKNOWN_EVENT_TYPE, 0)
        assert letters == {reason.value: n for reason, n in invalid.items()}
        assert total == sum(letters.values())
        assert engine.unknown_skipped == unknown
    finally:
        await pool.close()


class _Gated(OrdersProjection):
    """The orders projection, holding its first batch open until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def apply(self, conn: Any, batch: Sequence[Positioned],
                    physical: Mapping[str, str]) -> set[str]:
        self.entered.set()
        await self.release.wait()
        return await super().apply(conn, batch, physical)


async def test_a_slow_projection_does_not_hold_back_the_others_commit(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=100, seed=33)
    await send(records, kafka_bootstrap)
    gated = _Gated()
    projections = (gated, TimelineProjection())
    pool = await migrated_pool(pg_dsn, projections)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, projections,
                        group_id=None)
        async with running(engine):
            await asyncio.wait_for(gated.entered.wait(), 30)
            # The orders transaction is open; the timeline's has committed beside it.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            async with pool.acquire() as conn:
                while (not await conn.fetchval("SELECT count(*) FROM order_timeline")
                       and loop.time() < deadline):
                    await asyncio.sleep(0.05)
                assert await conn.fetchval("SELECT count(*) FROM order_timeline") > 0
                assert await conn.fetchval("SELECT count(*) FROM order_summary") == 0
            gated.release.set()
            await wait_caught_up(engine, PARTITIONS)
            while engine.lag_by_projection()["orders"]:
                await asyncio.sleep(0.05)
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
    finally:
        await pool.close()


async def test_postgres_restart_mid_run_is_retried(
    kafka_bootstrap: str, topics: tuple[str, ...], servers_dir: Path
) -> None:
    # A server of its own: restarting the shared one would disturb nothing
    # here, but DATABASE_URL may point at a server we must not restart.
    pg = EmbeddedPostgres(servers_dir / f"pg-restart-{os.getpid()}", durable=False, preferred_port=0)
    pg.start()
    try:
        records = simulate(topics, orders=1200, seed=21, duplicates=0.05)
        half = len(records) // 2
        await send(records[:half], kafka_bootstrap)
        pool = await migrated_pool(pg.url)
        settings = settings_for(pg.url, kafka_bootstrap, topics, batch_max_events=200)
        engine = Engine(settings, pool, ALL, group_id=None)
        async with running(engine) as task:
            while engine.events_applied < 500:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(pg.stop)  # connections die mid-run
            await send(records[half:], kafka_bootstrap)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(pg.start)
            await wait_caught_up(engine, PARTITIONS, timeout_s=90)
            assert not task.done()
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
        await pool.close()
    finally:
        pg.stop()


async def test_commits_the_database_lost_are_applied_again_without_new_events(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    # PostgreSQL crashed before flushing the last commits (the projector commits with
    # synchronous_commit=off) or was restored from a backup: its tables and checkpoints are
    # behind what the engine saw commit. Nothing new arrives to be fenced on, so the engine
    # must notice by itself (here the whole history is lost) and apply the events again.
    records = simulate(topics, orders=150, seed=23, duplicates=0.05)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
        async with running(engine) as task:
            await wait_caught_up(engine, PARTITIONS)
            applied = engine.events_applied
            async with pool.acquire() as conn:
                await conn.execute("TRUNCATE order_summary, order_timeline, customer_summary, "
                                   "product_sales, daily_sales, projector_checkpoints")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while engine.events_applied < 2 * applied and loop.time() < deadline:
                await asyncio.sleep(0.2)
            await wait_caught_up(engine, PARTITIONS)
            assert not task.done()
        assert engine.events_applied == 2 * applied  # every event once more, none twice
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
    finally:
        await pool.close()


async def test_checkpoints_outside_the_log_are_refused(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=200, seed=4)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    placed = topics[0]
    async with pool.acquire() as conn:
        # Partition 0: the topic was recreated (checkpoint beyond its end).
        # Partition 1: retention deleted events (checkpoint below the log start).
        await conn.execute(
            "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
            " SELECT p, $1, 0, 100000 FROM unnest($2::text[]) p", placed, ["orders", "timeline"])
        await conn.execute(
            "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
            " SELECT p, $1, 1, 2 FROM unnest($2::text[]) p", placed, ["orders", "timeline"])
    try:
        engine = Engine(settings_for(pg_dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
        real_starts = None

        async def starts(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            # Stands in for retention, which the embedded broker cannot apply
            # (it has no DeleteRecords): partition 1 now starts at offset 10.
            assert engine._consumer is not None
            found: dict[TopicPartition, int] = await engine._consumer.beginning_offsets(tps)
            return {tp: (10 if (tp.topic, tp.partition) == (placed, 1) else o)
                    for tp, o in found.items()}

        engine.log_starts = starts
        del real_starts
        async with running(engine):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(engine.refused) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.1)
        assert set(engine.refused) == {(placed, 0), (placed, 1)}
        async with pool.acquire() as conn:
            refused = {(r["partition"], r["reason"].split(":")[-1].strip()[:20]) for r in
                       await conn.fetch("SELECT partition, reason FROM refused_partitions")}
            stored = await conn.fetchval(
                "SELECT next_offset FROM projector_checkpoints WHERE projection = 'orders'"
                " AND topic = $1 AND partition = 0", placed)
            others = await conn.fetchval(
                "SELECT count(*) FROM projector_checkpoints WHERE next_offset > 0"
                " AND NOT (topic = $1 AND partition IN (0, 1))", placed)
        assert {p for p, _ in refused} == {0, 1}
        assert stored == 100000  # nothing skipped, nothing re-applied
        assert others > 0  # the other partitions went on
    finally:
        with contextlib.suppress(Exception):
            await pool.close()


async def test_pause_one_projection_then_resume_catches_up(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    first = simulate(topics, orders=300, seed=41)
    second = simulate(topics, orders=300, seed=42)
    await send(first, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    settings = settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=500)
    try:
        engine = Engine(settings, pool, ALL, group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
            await set_paused(settings, ["orders"], paused=True)
            while "orders" not in engine.paused:
                await asyncio.sleep(0.05)
            frozen = dict(engine.positions["orders"])
            await send(second, kafka_bootstrap)
            # The timeline goes on; orders stays where it was paused. (Wait on
            # positions, not on lag: the high watermarks lag behind the sends.)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            published = len(first) + len(second)
            while (sum(max(0, o) for o in engine.positions["timeline"].values()) < published
                   and loop.time() < deadline):
                await asyncio.sleep(0.1)
            assert engine.lag_by_projection()["timeline"] == 0
            assert engine.positions["orders"] == frozen
            await asyncio.sleep(1.2)  # one status round
            async with pool.acquire() as conn:
                state = await conn.fetchval("SELECT state FROM projections WHERE name = 'orders'")
                assert state == "PAUSED"
                assert await conn.fetchval("SELECT count(*) FROM order_timeline") == len(
                    {e.event_id for e in valid_events(first + second)})
            await set_paused(settings, ["orders"], paused=False)
            await wait_caught_up(engine, PARTITIONS)
            while engine.lag_by_projection()["orders"]:
                await asyncio.sleep(0.1)
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(first + second))
    finally:
        await pool.close()


class _Counting(OrdersProjection):
    """The real projection, counting the events and distinct orders of each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    async def apply(self, conn: Any, batch: Sequence[Positioned],
                    physical: Mapping[str, str]) -> set[str]:
        self.batches.append((len(batch), len({p.event.order_id for p in batch})))
        return await super().apply(conn, batch, physical)


async def test_an_orders_events_on_several_topics_share_a_batch(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    # A backlog published as the services do (an order's events moments apart,
    # each on its own topic): batches are cut in timestamp order across the 30
    # partitions, so most events of an order are folded into one row write.
    # Drained partition by partition, a batch would hold one event per order.
    records = simulate(topics, orders=2000, seed=5)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    counting = _Counting()
    try:
        settings = settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=2000)
        engine = Engine(settings, pool, [counting, TimelineProjection()], group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
        events = sum(n for n, _ in counting.batches)
        row_writes = sum(orders for _, orders in counting.batches)
        assert events == len(valid_events(records))
        assert len(counting.batches) >= 5
        assert row_writes < 0.5 * events, counting.batches
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
    finally:
        await pool.close()


async def test_a_backlog_keeps_moving_while_caught_up_partitions_hold_a_long_poll(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    # While the aligner holds enough of some partitions, the fetch routine waits on the
    # others, which may have nothing left (caught up) and so hold that wait for the whole
    # poll timeout. Once a batch is taken the full partitions have room again: their
    # records must be drained then, not after the timeout (60 s here, longer than this
    # test waits), or a backlog moves two batches per poll timeout.
    records = simulate(topics, orders=600, seed=11)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    try:
        settings = settings_for(pg_dsn, kafka_bootstrap, topics, batch_max_events=100,
                                poll_timeout_ms=60_000)
        engine = Engine(settings, pool, ALL, group_id=None)
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS, timeout_s=45)
        async with pool.acquire() as conn:
            await assert_tables_match(conn, valid_events(records))
    finally:
        await pool.close()
