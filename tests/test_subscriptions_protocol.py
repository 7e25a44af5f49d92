"""Protocol conformance over raw WebSockets: graphql-transport-ws, and the legacy graphql-ws."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from test_subscriptions_support import (
    LEGACY_WS,
    ORDER_FIELDS,
    TRANSPORT_WS,
    data_of,
    prepared,
    raw,
    served_live,
    until,
    write_order,
)

from api.config import SocketLimits

SUB = f'subscription {{ orderUpdated(orderId: "o1") {{ {ORDER_FIELDS} }} }}'


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


async def test_connection_init_timeout_is_10_s_for_both_protocols(dsn: str) -> None:
    async with served_live(dsn) as served, raw(served) as current, raw(served, LEGACY_WS) as legacy:
        started = time.monotonic()
        codes = await asyncio.gather(current.closed(within_s=15), legacy.closed(within_s=15))
        elapsed = time.monotonic() - started
        assert list(codes) == [4408, 4408]
        assert current.ws.close_reason == "Connection initialisation timeout"
        # Not before the 10 s (closed() gives up at 15 s: no tighter bound on a shared machine).
        assert elapsed >= 9.5, elapsed


async def test_subscribe_before_ack_is_refused(dsn: str) -> None:
    async with served_live(dsn) as served:
        async with raw(served) as ws:
            await ws.subscribe("1", SUB)
            assert await ws.closed() == 4401
        async with raw(served, LEGACY_WS) as ws:
            await ws.subscribe("1", SUB, legacy=True)
            assert await ws.closed() == 4401
        assert len(served.live.registry) == 0


async def test_duplicate_id_and_second_init(dsn: str) -> None:
    async with served_live(dsn) as served:
        async with raw(served) as ws:
            await ws.init()
            await ws.subscribe("1", SUB)
            await ws.subscribe("1", SUB)
            assert await ws.closed() == 4409
        async with raw(served) as ws:
            await ws.init()
            await ws.send({"type": "connection_init"})
            assert await ws.closed() == 4429
        async with raw(served, LEGACY_WS) as ws:
            await ws.init()
            await ws.send({"type": "connection_init"})
            assert await ws.closed() == 4429


async def test_ping_pong_and_server_keepalive(dsn: str) -> None:
    async with served_live(dsn, limits=SocketLimits(keepalive_s=0.3)) as served:
        async with raw(served) as ws:
            await ws.init()
            await ws.send({"type": "ping", "payload": {"n": 1}})
            assert (await ws.recv())["type"] == "pong"
            # The server pings an idle connection; the client answers.
            assert (await ws.recv(within_s=2))["type"] == "ping"
            await ws.send({"type": "pong"})
            assert (await ws.recv(within_s=2))["type"] == "ping"
        async with raw(served, LEGACY_WS) as ws:
            await ws.init()
            assert (await ws.recv(within_s=2))["type"] == "ka"


async def test_complete_from_the_client(dsn: str, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with served_live(dsn) as served, raw(served) as ws:
            await ws.init()
            await ws.subscribe("1", SUB)
            await until(lambda: len(served.live.registry) == 1)
            await write_order(conn, "o1", status="PAID")
            assert data_of(await ws.recv_type("next"), "orderUpdated")["status"] == "PAID"
            await ws.send({"type": "complete", "id": "1"})
            await until(lambda: len(served.live.registry) == 0)
            await write_order(conn, "o1", status="SHIPPED", event_count=2)
            with pytest.raises(TimeoutError):
                await ws.recv_type("next", within_s=0.5)
            # The id is free again.
            await ws.subscribe("1", SUB)
            assert data_of(await ws.recv_type("next"), "orderUpdated")["status"] == "SHIPPED"
        async with served_live(dsn) as served, raw(served, LEGACY_WS) as ws:
            await ws.init()
            await ws.subscribe("1", SUB, legacy=True)
            assert data_of(await ws.recv_type("data"), "orderUpdated")["status"] == "SHIPPED"
            await ws.send({"type": "stop", "id": "1"})
            assert (await ws.recv_type("complete"))["id"] == "1"
            await until(lambda: len(served.live.registry) == 0)
    finally:
        await conn.close()


async def test_complete_from_the_server(dsn: str) -> None:
    async with served_live(dsn) as served, raw(served) as ws:
        await ws.init()
        # A query over the socket: one result, then complete.
        await ws.subscribe("q", '{ order(orderId: "o1") { orderId } }')
        assert data_of(await ws.recv_type("next"), "order") is None
        assert (await ws.recv_type("complete"))["id"] == "q"
        # A subscription refused before it starts: one error message, terminal.
        await ws.subscribe("bad", 'subscription { projectionProgress(name: "nope") { name } }')
        assert (await ws.recv_type("error"))["id"] == "bad"
        # A subscription the server ends (shutdown): complete.
        await ws.subscribe("s", SUB)
        await until(lambda: len(served.live.registry) == 1)
        served.live.registry.close()
        assert (await ws.recv_type("complete"))["id"] == "s"


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_at_most_50_subscriptions_per_connection(dsn: str, protocol: str) -> None:
    legacy = protocol == LEGACY_WS
    async with served_live(dsn) as served, raw(served, protocol) as ws:  # type: ignore[arg-type]
        await ws.init()
        for i in range(50):
            await ws.subscribe(str(i), SUB, legacy=legacy)
        await until(lambda: len(served.live.registry) == 50)
        await ws.subscribe("50", SUB, legacy=legacy)
        error = await ws.recv_type("error")
        assert error["id"] == "50"
        message = error["payload"][0]["message"] if not legacy else error["payload"]["message"]
        assert message == "Subscription limit reached"
        assert len(served.live.registry) == 50
        # Another connection has its own 50.
        async with raw(served, protocol) as other:  # type: ignore[arg-type]
            await other.init()
            await other.subscribe("0", SUB, legacy=legacy)
            await until(lambda: len(served.live.registry) == 51)
        await until(lambda: len(served.live.registry) == 50)
        # Ending one makes room for one.
        await ws.send({"type": "stop" if legacy else "complete", "id": "0"})
        await until(lambda: len(served.live.registry) == 49)
        await ws.subscribe("again", SUB, legacy=legacy)
        await until(lambda: len(served.live.registry) == 50)


async def test_dead_connections_are_dropped(dsn: str) -> None:
    async with served_live(dsn, ws_ping_interval=0.3, ws_ping_timeout=0.3) as served:
        async with raw(served, ping_interval=None) as ws:
            await ws.init()
            await ws.subscribe("1", SUB)
            await until(lambda: len(served.live.registry) == 1)
            assert served.sample("api_websocket_connections") == 1
            # The client stops reading (as a dead peer would): it answers no ping.
            ws.ws.transport.pause_reading()
            await until(lambda: len(served.live.registry) == 0, 5, "the server dropped the connection")
            await until(lambda: served.sample("api_websocket_connections") == 0, 5)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_completed_operations_free_their_slots(dsn: str, protocol: str) -> None:
    # GHSA-m952-2w3f-6r8h (strawberry < 0.327.2, legacy protocol): one-shot operations
    # that completed kept their slot, so a client could lock itself (or be locked) out.
    legacy = protocol == LEGACY_WS
    async with served_live(dsn) as served, raw(served, protocol) as ws:  # type: ignore[arg-type]
        await ws.init()
        for i in range(60):
            await ws.subscribe(f"q{i}", '{ order(orderId: "o1") { orderId } }', legacy=legacy)
            if legacy:  # it runs subscriptions only: a query is refused, and done with
                error = await ws.recv_type("error")
                assert "queries are not allowed when using graphql-ws" in error["payload"]["message"]
            else:
                await ws.recv_type("next")
                assert (await ws.recv_type("complete"))["id"] == f"q{i}"
        for i in range(50):
            await ws.subscribe(str(i), SUB, legacy=legacy)
        await until(lambda: len(served.live.registry) == 50)
