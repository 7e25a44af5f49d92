"""Subscriptions over real WebSockets: both protocols with gql, the filters, the whole path from Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from enginekit import migrated_pool, running, send, settings_for, simulate, wait_caught_up
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport
from test_api_support import T0
from test_subscriptions_support import (
    ORDER_FIELDS,
    Served,
    data_of,
    prepared,
    raw,
    served_live,
    until,
    write_day,
    write_order,
)

from api.sql.changes import FEED_TABLES
from projector.engine import Engine
from projector.projections import ALL

PARTITIONS = 30
PROTOCOLS = [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL]


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def client(served: Served, protocol: str, init_payload: dict[str, Any] | None = None) -> Client:
    transport = WebsocketsTransport(url=served.url, subprotocols=[protocol], init_payload=init_payload or {})
    return Client(transport=transport, fetch_schema_from_transport=False)


@contextlib.asynccontextmanager
async def collecting(session: Any, query: str, variables: dict[str, Any] | None = None
                     ) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Results of a gql subscription, into a queue, while the block runs."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    request = gql(query)
    request.variable_values = variables

    async def pump() -> None:
        async for result in session.subscribe(request):
            await queue.put(result)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_order_updated_sends_the_current_row_then_each_change(
    dsn: str, conn: asyncpg.Connection, protocol: str
) -> None:
    await write_order(conn, "o1", status="PLACED", event_count=1)
    query = f"subscription($id: ID!) {{ orderUpdated(orderId: $id) {{ {ORDER_FIELDS} }} }}"
    async with served_live(dsn) as served, client(served, protocol) as session, \
            collecting(session, query, {"id": "o1"}) as results:
        first = await asyncio.wait_for(results.get(), 5)
        assert first == {"orderUpdated": {"orderId": "o1", "customerId": "c1", "status": "PLACED",
                                          "eventCount": 1}}
        for n, status in enumerate(["PAID", "SHIPPED"], start=2):
            await write_order(conn, "o2", status=status)  # another order: not sent
            await write_order(conn, "o1", status=status, event_count=n)
            got = await asyncio.wait_for(results.get(), 5)
            assert got["orderUpdated"]["status"] == status and got["orderUpdated"]["eventCount"] == n
        assert results.empty()
        await until(lambda: served.sample("api_subscriptions", field="orderUpdated") == 1)
    # The client went away: the subscription is gone (the app stopped too; its gauge says 0).
    assert served.sample("api_subscriptions", field="orderUpdated") == 0


async def test_a_missing_order_sends_nothing_until_it_exists(dsn: str, conn: asyncpg.Connection) -> None:
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        await ws.subscribe("1", f'subscription {{ orderUpdated(orderId: "later") {{ {ORDER_FIELDS} }} }}')
        with pytest.raises(TimeoutError):
            await ws.recv_type("next", within_s=0.5)
        await write_order(conn, "later", status="PAID")
        assert data_of(await ws.recv_type("next"), "orderUpdated")["status"] == "PAID"


async def test_filters(dsn: str, conn: asyncpg.Connection) -> None:
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        await ws.subscribe("all", f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}")
        await ws.subscribe("c2", f'subscription {{ orderUpdated(customerId: "c2") {{ {ORDER_FIELDS} }} }}')
        await ws.subscribe("paid", "subscription { orderUpdated(status: [PAID, SHIPPED]) "
                                   "{ orderId status } }")
        await ws.subscribe("both", 'subscription { orderUpdated(customerId: "c1", status: [PAID]) '
                                   "{ orderId status } }")
        await until(lambda: len(served.live.registry) == 4)
        # One at a time: changes read together would be delivered as their latest state.
        for order_id, customer, status, n in (("a", "c1", "PLACED", 1), ("b", "c2", "PAID", 1),
                                              ("a", "c1", "PAID", 2)):
            seq = await write_order(conn, order_id, customer_id=customer, status=status, event_count=n)
            await until(lambda seq=seq: served.live.feed.cursors()["order_summary"] >= seq)
        got: dict[str, list[tuple[str, str]]] = {}
        for _ in range(3 + 1 + 2 + 1):
            message = await ws.recv_type("next")
            row = data_of(message, "orderUpdated")
            got.setdefault(message["id"], []).append((row["orderId"], row["status"]))
        assert got == {"all": [("a", "PLACED"), ("b", "PAID"), ("a", "PAID")], "c2": [("b", "PAID")],
                       "paid": [("b", "PAID"), ("a", "PAID")], "both": [("a", "PAID")]}


async def test_order_status_changed(dsn: str, conn: asyncpg.Connection) -> None:
    paid_at, shipped_at = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    await write_order(conn, "s1", status="PLACED")
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        await ws.subscribe("any", "subscription { orderStatusChanged { order { orderId } previousStatus "
                                  "status at } }")
        await ws.subscribe("shipped", "subscription { orderStatusChanged(status: [SHIPPED]) { status } }")
        await until(lambda: len(served.live.registry) == 2)
        await write_order(conn, "s1", status="PAID", event_count=2, paid_at=paid_at)
        first = data_of(await ws.recv_type("next"), "orderStatusChanged")
        assert first == {"order": {"orderId": "s1"}, "previousStatus": "PLACED", "status": "PAID",
                         "at": paid_at.isoformat()}
        # The row changes, its status does not: no message.
        seq = await write_order(conn, "s1", status="PAID", event_count=3, paid_at=paid_at)
        await until(lambda: served.live.feed.cursors()["order_summary"] >= seq)
        await write_order(conn, "s1", status="SHIPPED", event_count=4, paid_at=paid_at, shipped_at=shipped_at)
        # Each subscription sends on its own: their messages come in either order.
        by_id = {m["id"]: data_of(m, "orderStatusChanged") for m in
                 [await ws.recv_type("next"), await ws.recv_type("next")]}
        assert by_id == {"any": {"order": {"orderId": "s1"}, "previousStatus": "PAID", "status": "SHIPPED",
                                 "at": shipped_at.isoformat()},
                         "shipped": {"status": "SHIPPED"}}
        with pytest.raises(TimeoutError):
            await ws.recv_type("next", within_s=0.3)


async def test_daily_sales_updated(dsn: str, conn: asyncpg.Connection) -> None:
    day = date(2024, 3, 1)
    await write_day(conn, day, 3, Decimal("30.00"))
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        await ws.subscribe("day", 'subscription { dailySalesUpdated(day: "2024-03-01") '
                                  "{ day ordersPlaced revenue } }")
        await ws.subscribe("all", "subscription { dailySalesUpdated { day ordersPlaced } }")
        first = await ws.recv_type("next")
        assert first["id"] == "day"
        assert data_of(first, "dailySalesUpdated") == {
            "day": "2024-03-01", "ordersPlaced": 3, "revenue": "30.00"}
        await until(lambda: len(served.live.registry) == 2)
        await write_day(conn, day + timedelta(days=1), 1)
        assert data_of(await ws.recv_type("next"), "dailySalesUpdated")["ordersPlaced"] == 1
        await write_day(conn, day, 4, Decimal("40.00"))
        got = [await ws.recv_type("next") for _ in range(2)]
        assert sorted((m["id"], data_of(m, "dailySalesUpdated")["ordersPlaced"]) for m in got) == [
            ("all", 4), ("day", 4)]


async def test_projection_progress(dsn: str, conn: asyncpg.Connection) -> None:
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        await ws.subscribe("1", 'subscription { projectionProgress(name: "orders") { name state '
                                "eventsPerSecond partitions { topic checkpoint endOffset lag } lag "
                                "rebuildProgress } }")
        first = data_of(await ws.recv_type("next"), "projectionProgress")
        assert first["name"] == "orders" and first["eventsPerSecond"] is None and first["lag"] is None
        # The engine publishes its state about once a second; so does the poller read it.
        async with conn.transaction():  # one change, as the poller sees it
            await conn.execute("INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
                               " VALUES ('orders', 'orders.placed', 0, 40)")
            await conn.execute("INSERT INTO partition_status (topic, partition, end_offset, owner)"
                               " VALUES ('orders.placed', 0, 50, 'test')")
            await conn.execute("UPDATE projections SET state = 'CATCHING_UP', events_per_second = 12.5,"
                               " heartbeat_at = now() WHERE name = 'orders'")
        changed = data_of(await ws.recv_type("next", within_s=5), "projectionProgress")
        assert changed == {"name": "orders", "state": "CATCHING_UP", "eventsPerSecond": 12.5, "lag": 10,
                           "partitions": [{"topic": "orders.placed", "checkpoint": 40, "endOffset": 50,
                                           "lag": 10}], "rebuildProgress": None}
        await ws.subscribe("2", 'subscription { projectionProgress(name: "nope") { name } }')
        error = await ws.recv_type("error")
        assert error["id"] == "2" and "no projection named 'nope'" in error["payload"][0]["message"]


async def test_queries_over_http_cannot_subscribe(dsn: str) -> None:
    async with served_live(dsn) as served:
        import httpx
        async with httpx.AsyncClient(base_url=f"http://{served.host}") as http:
            response = await http.post("/graphql", json={
                "query": "subscription { orderUpdated { orderId } }"})
            assert response.status_code == 400


async def _final_states(pool: asyncpg.Pool, order_ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT order_id, status, event_count FROM order_summary WHERE order_id = ANY($1)", order_ids)
    return {r["order_id"]: (r["status"], r["event_count"]) for r in rows}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_from_kafka_to_the_subscriber(
    dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], protocol: str
) -> None:
    records = simulate(topics, orders=150, seed=21)
    watched = sorted({r.event.order_id for r in records if r.event is not None})[:10]
    pool = await migrated_pool(dsn)
    latest: dict[str, tuple[str, int]] = {}
    wide: dict[str, tuple[str, int]] = {}
    try:
        async with served_live(dsn) as served, client(served, protocol) as session:
            async def one(order_id: str) -> None:
                query = f'subscription {{ orderUpdated(orderId: "{order_id}") {{ status eventCount }} }}'
                async for result in session.subscribe(gql(query)):
                    row = result["orderUpdated"]
                    latest[order_id] = (row["status"], row["eventCount"])

            async def everything() -> None:
                query = gql(f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}")
                async for result in session.subscribe(query):
                    row = result["orderUpdated"]
                    wide[row["orderId"]] = (row["status"], row["eventCount"])

            tasks = [asyncio.create_task(one(o)) for o in watched] + [asyncio.create_task(everything())]
            await until(lambda: len(served.live.registry) == len(watched) + 1)
            engine = Engine(settings_for(dsn, kafka_bootstrap, topics), pool, ALL, group_id=None)
            async with running(engine):
                await send(records, kafka_bootstrap)
                await wait_caught_up(engine, PARTITIONS)
                final = await _final_states(pool, watched)
                await until(lambda: all(latest.get(o) == final[o] for o in watched), 15,
                            "every watched order's last message is its final state")
                everyone = await pool.fetch("SELECT order_id, status, event_count FROM order_summary")
                await until(lambda: all(wide.get(r["order_id"]) == (r["status"], r["event_count"])
                                        for r in everyone), 15, "the wide subscriber saw every final state")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # At most a round per batch (notifications coalesce), and one more now and
            # then to look for the rows of a batch that was in flight during a read.
            assert served.live.feed.rounds <= 2 * engine.batches_committed + 5
    finally:
        await pool.close()


async def test_the_migration_indexes_what_the_feed_reads(conn: asyncpg.Connection) -> None:
    # The feed reads "updated_seq > last delivered" per table: an index scan, not a table scan.
    for table in FEED_TABLES:
        indexed = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%(updated_seq)'",
            table)
        assert indexed == 1, table

