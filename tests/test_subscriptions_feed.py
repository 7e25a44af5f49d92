"""The change feed against the real servers: its cost, out-of-order commits, a lost LISTEN
connection while events flow, a rebuild swapping the tables under the subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import pytest
from enginekit import migrated_pool, running, send, settings_for, simulate, wait_caught_up
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport
from test_subscriptions_support import (
    ORDER_FIELDS,
    Served,
    data_of,
    notify,
    prepared,
    raw,
    served_live,
    until,
    write_order,
)

from api.sql.changes import FEED_TABLES
from projector.engine import Engine
from projector.projections import ALL
from projector.rebuild import Rebuild
from projector.simulator import publish

PARTITIONS = 30


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


@contextlib.asynccontextmanager
async def feed_statements(served: Served) -> AsyncIterator[list[str]]:
    """The statements the feed's reader runs while the block runs (seen by the driver)."""
    seen: list[str] = []
    reader = served.live.feed._reader
    assert reader is not None
    async with reader.acquire() as connection:
        raw_conn: Any = connection._con

    def log(record: Any) -> None:
        seen.append(record.query)

    raw_conn.add_query_logger(log)
    try:
        yield seen
    finally:
        raw_conn.remove_query_logger(log)


async def _one_change_at_a_time(served: Served, conn: asyncpg.Connection, changes: int) -> None:
    for n in range(changes):
        seq = await write_order(conn, f"o{n % 5}", customer_id=f"c{n % 3}", status="PAID", event_count=n + 2)
        await until(lambda seq=seq: served.live.feed.cursors()["order_summary"] >= seq)


@pytest.mark.parametrize("subscribers", [1, 300])
async def test_the_cost_of_a_change_does_not_depend_on_the_subscribers(
    dsn: str, conn: asyncpg.Connection, subscribers: int
) -> None:
    queries = [f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}",
               'subscription { orderUpdated(orderId: "o1") { orderId status } }',
               'subscription { orderUpdated(customerId: "c2") { orderId } }',
               "subscription { orderStatusChanged { status } }"]
    async with served_live(dsn) as served, contextlib.AsyncExitStack() as stack:
        # Most of their frames are never read: a short close, or each close waits 10 s
        # for a close frame queued behind them.
        sockets = [await stack.enter_async_context(raw(served, close_timeout=0.2))
                   for _ in range(1 + subscribers // 50)]
        for ws in sockets:
            await ws.init()
        for i in range(subscribers):
            await sockets[i // 50].subscribe(str(i), queries[i % len(queries)])
        await until(lambda: len(served.live.registry) == subscribers)
        rounds = served.live.feed.rounds
        async with feed_statements(served) as statements:
            await _one_change_at_a_time(served, conn, 20)
        # Per change: one statement, the read of the changed table (with its snapshot).
        assert served.live.feed.rounds - rounds == 20
        # At most one read per round, whatever the number of subscribers (a round
        # may find its rows already read by the one before).
        assert 1 <= len(statements) <= 20, statements[:6]
        assert all('FROM "order_summary"' in s for s in statements)
        # And the subscribers did get the changes: the first wide one saw all 20.
        got = 0
        while got < 20:
            message = await sockets[0].recv_type("next")
            got += message["id"] == "0"


async def test_a_table_nobody_watches_costs_a_max_per_change(dsn: str, conn: asyncpg.Connection) -> None:
    async with served_live(dsn) as served, feed_statements(served) as statements:
        await _one_change_at_a_time(served, conn, 5)
        assert len(statements) == 5 and all("max(updated_seq)" in s for s in statements)


async def test_the_feeds_generic_plans_made_on_empty_tables_walk_the_sequence_index(dsn: str) -> None:
    # The feed's reader keeps generic plans; one made while a table is empty, as here, must
    # still read the few rows above the cursor through the index, not scan and sort the table.
    async with served_live(dsn) as served:
        reader = served.live.feed._reader
        assert reader is not None
        async with reader.acquire() as connection, connection.transaction():
            await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")  # to see it
            for spec in FEED_TABLES.values():
                for sql in (spec.since, spec.newest):
                    params = len((await connection.prepare(sql)).get_parameters())
                    await connection.execute(f"PREPARE feed_read AS {sql}")
                    plan = "\n".join(r[0] for r in await connection.fetch(
                        f"EXPLAIN EXECUTE feed_read({', '.join(['NULL'] * params)})"))
                    await connection.execute("DEALLOCATE feed_read")
                    assert f"{spec.name}_updated_seq_idx" in plan, plan
                    assert f"Seq Scan on {spec.name}" not in plan and "Sort" not in plan, plan


async def test_rows_of_transactions_that_commit_out_of_order_are_not_missed(
    dsn: str, conn: asyncpg.Connection
) -> None:
    other = await asyncpg.connect(dsn)
    try:
        async with served_live(dsn) as served, raw(served) as ws:
            await ws.init()
            await ws.subscribe("all", f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}")
            await until(lambda: len(served.live.registry) == 1)
            # Batch A takes its sequence first and commits last.
            late = other.transaction()
            await late.start()
            late_seq = await write_order(other, "late", status="PAID", notify_too=False)
            early_seq = await write_order(conn, "early", status="PAID")
            assert late_seq < early_seq
            assert data_of(await ws.recv_type("next"), "orderUpdated")["orderId"] == "early"
            assert served.live.feed.cursors()["order_summary"] >= early_seq > late_seq
            await notify(other, "order_summary")  # sent at commit, as the engine's
            await late.commit()
            assert data_of(await ws.recv_type("next"), "orderUpdated")["orderId"] == "late"
    finally:
        await other.close()


async def test_a_transaction_running_when_the_feed_starts_is_not_missed(
    dsn: str, conn: asyncpg.Connection
) -> None:
    other = await asyncpg.connect(dsn)
    try:
        late = other.transaction()
        await late.start()
        await write_order(other, "before-start", status="PAID", notify_too=False)
        await write_order(conn, "committed", status="PAID", notify_too=False)
        async with served_live(dsn) as served, raw(served) as ws:  # waits ~2 s for `late`
            await ws.init()
            await ws.subscribe("all", "subscription { orderUpdated { orderId } }")
            await until(lambda: len(served.live.registry) == 1)
            await notify(other, "order_summary")
            await late.commit()
            assert data_of(await ws.recv_type("next"), "orderUpdated") == {"orderId": "before-start"}
            with pytest.raises(TimeoutError):
                await ws.recv_type("next", within_s=0.3)  # `committed` predates the feed
    finally:
        await other.close()


async def _watch(session: Any, query: str, into: dict[str, Any], errors: list[str]) -> None:
    try:
        async for result in session.subscribe(gql(query)):
            row = next(iter(result.values()))
            into[str(row.get("orderId") or row.get("day"))] = row
    except Exception as exc:
        errors.append(str(exc))


async def test_events_all_arrive_though_the_listen_connection_is_killed(
    dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=600, seed=31)
    watched = sorted({r.event.order_id for r in records if r.event is not None})[::40]
    pool = await migrated_pool(dsn)
    latest: dict[str, Any] = {}
    wide: dict[str, Any] = {}
    errors: list[str] = []
    try:
        async with served_live(dsn) as served:
            transport = WebsocketsTransport(url=served.url)
            async with Client(transport=transport) as session:
                tasks = [asyncio.create_task(_watch(
                    session, f'subscription {{ orderUpdated(orderId: "{o}") {{ {ORDER_FIELDS} }} }}',
                    latest, errors)) for o in watched]
                tasks.append(asyncio.create_task(_watch(
                    session, f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}", wide, errors)))
                await until(lambda: len(served.live.registry) == len(watched) + 1)
                engine = Engine(settings_for(dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
                async with running(engine):
                    publishing = asyncio.create_task(publish(records, kafka_bootstrap, rate=1500))
                    admin = await asyncpg.connect(dsn)
                    try:
                        killed = 0
                        while not publishing.done():
                            await asyncio.sleep(0.4)
                            killed += await admin.fetchval(
                                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE application_name LIKE 'projector-api-feed%') t")
                    finally:
                        await admin.close()
                    await publishing
                    await wait_caught_up(engine, PARTITIONS)
                    assert killed >= 3
                    rows = await pool.fetch(
                        "SELECT order_id, customer_id, status, event_count FROM order_summary")
                    final = {r["order_id"]: {"orderId": r["order_id"], "customerId": r["customer_id"],
                                             "status": r["status"], "eventCount": r["event_count"]}
                             for r in rows}
                    await until(lambda: all(latest.get(o) == final[o] for o in watched), 20,
                                "every watched order's last message is its final state")
                    await until(lambda: wide == final, 20, "the wide subscriber's last messages are the "
                                "final states of all orders")
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert not errors, errors
            assert served.live.feed.reconnects >= 2
            assert served.sample("api_feed_reconnects_total") == served.live.feed.reconnects
    finally:
        await pool.close()


async def test_a_rebuild_swap_sends_the_new_current_state(
    dsn: str, kafka_bootstrap: str, topics: tuple[str, ...]
) -> None:
    records = simulate(topics, orders=300, seed=41)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(dsn)
    settings = settings_for(dsn, kafka_bootstrap, topics, batch_max_events=1000)
    try:
        engine = Engine(settings, pool, ALL, group_id=None, client_id="live")
        async with running(engine):
            await wait_caught_up(engine, PARTITIONS)
            async with pool.acquire() as db:
                target = await db.fetchrow("SELECT order_id, customer_id, status FROM order_summary"
                                           " WHERE customer_id IS NOT NULL ORDER BY order_id LIMIT 1")
                day: date = await db.fetchval("SELECT min(day) FROM daily_sales")
                days = await db.fetchval("SELECT count(*) FROM daily_sales")
                # Damage the live rows (no notification): the rebuild will repair them.
                await db.execute("UPDATE order_summary SET status = 'REFUNDED' WHERE order_id = $1",
                                 target["order_id"])
                await db.execute("UPDATE daily_sales SET orders_placed = -1 WHERE day = $1", day)
            async with served_live(dsn) as served, raw(served) as ws:
                await ws.init()
                await ws.subscribe("order", f'subscription {{ orderUpdated(orderId: "{target["order_id"]}") '
                                            "{ orderId status } }")
                await ws.subscribe("customer", f'subscription {{ orderUpdated(customerId: '
                                               f'"{target["customer_id"]}") {{ orderId status }} }}')
                await ws.subscribe("day", f'subscription {{ dailySalesUpdated(day: "{day}") '
                                          "{ day ordersPlaced } }")
                await ws.subscribe("days", "subscription { dailySalesUpdated { day ordersPlaced } }")
                await ws.subscribe("all", "subscription { orderUpdated { orderId status } }")
                firsts = {m["id"]: m for m in [await ws.recv_type("next"), await ws.recv_type("next")]}
                assert data_of(firsts["order"], "orderUpdated")["status"] == "REFUNDED"
                assert data_of(firsts["day"], "dailySalesUpdated")["ordersPlaced"] == -1
                await until(lambda: len(served.live.registry) == 5)

                await Rebuild(settings, pool, ALL, batch_max_events=5000).run()

                got: dict[str, list[dict[str, Any]]] = {}
                completed: set[str] = set()
                while len(got.get("days", [])) < days or "order" not in got or "day" not in got \
                        or "all" not in completed:
                    message = await ws.recv(within_s=10)
                    if message["type"] == "next":
                        got.setdefault(message["id"], []).append(message["payload"])
                    elif message["type"] == "complete":
                        completed.add(message["id"])
                order = got["order"][-1]["data"]["orderUpdated"]
                assert order == {"orderId": target["order_id"], "status": target["status"]}
                assert {"orderId": target["order_id"], "status": target["status"]} in [
                    p["data"]["orderUpdated"] for p in got["customer"]]
                assert got["day"][-1]["data"]["dailySalesUpdated"]["ordersPlaced"] > 0
                assert {p["data"]["dailySalesUpdated"]["day"] for p in got["days"]} == {
                    str(r["day"]) for r in await pool.fetch("SELECT day FROM daily_sales")}
                # Every order: too many to re-send; told to re-query (an error in the
                # stream, then complete), never left with a gap.
                ended = got["all"][-1]
                assert ended["data"] is None and ended["errors"][0]["extensions"]["code"] == "RESYNC_REQUIRED"
                assert "query the current state, then subscribe again" in ended["errors"][0]["message"]
                assert completed == {"all"}
                assert served.sample("api_feed_resyncs_total", table="order_summary") == 1
                # Changes after the swap flow as before.
                async with pool.acquire() as db:
                    await write_order(db, target["order_id"], customer_id=target["customer_id"],
                                      status="DELIVERED", event_count=99)
                while True:
                    message = await ws.recv_type("next")
                    if message["id"] == "order":
                        assert data_of(message, "orderUpdated")["status"] == "DELIVERED"
                        break
    finally:
        await pool.close()

