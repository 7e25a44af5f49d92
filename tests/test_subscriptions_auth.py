"""Who may subscribe to what: JWTs on connection_init, customers' own orders, admin-only fields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from test_api_support import token
from test_subscriptions_support import (
    LEGACY_WS,
    ORDER_FIELDS,
    data_of,
    prepared,
    raw,
    served_live,
    until,
    write_order,
)

from api.auth import ADMIN
from api.context import SocketContext
from api.errors import Unauthenticated


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def alice() -> str:
    return token(role="customer", customer_id="alice")


async def test_connection_init_must_carry_a_valid_token(dsn: str) -> None:
    async with served_live(dsn, auth="jwt") as served:
        for payload in (None, {}, {"token": "not-a-jwt"}, {"Authorization": "Basic abc"},
                        {"token": token(key="another-secret-that-is-32-bytes-long!!")},
                        {"token": token(expires_in_s=-10)}):
            async with raw(served) as ws:
                init: dict[str, Any] = {"type": "connection_init"}
                if payload is not None:
                    init["payload"] = payload
                await ws.send(init)
                assert await ws.closed() == 4403, payload
        async with raw(served, LEGACY_WS) as ws:
            await ws.send({"type": "connection_init", "payload": {"token": "nope"}})
            error = await ws.recv()
            assert error["type"] == "connection_error"
            assert error["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
            assert await ws.closed() == 1011
        assert served.sample("api_websocket_connections") == 0


async def test_tokens_in_connection_init_are_accepted(dsn: str, conn: asyncpg.Connection) -> None:
    await write_order(conn, "o1", customer_id="alice", status="PAID")
    async with served_live(dsn, auth="jwt") as served:
        for payload in ({"Authorization": f"Bearer {token()}"}, {"authorization": f"bearer {token()}"},
                        {"token": token()}, {"headers": {"Authorization": f"Bearer {token()}"}}):
            async with raw(served) as ws:
                await ws.init(payload)
        # A real client library, both protocols.
        for protocol in (WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL):
            transport = WebsocketsTransport(url=served.url, subprotocols=[protocol],
                                            init_payload={"Authorization": f"Bearer {alice()}"})
            async with Client(transport=transport) as session:
                query = gql(f'subscription {{ orderUpdated(orderId: "o1") {{ {ORDER_FIELDS} }} }}')
                async for result in session.subscribe(query):
                    assert result["orderUpdated"]["status"] == "PAID"
                    break


async def test_nothing_runs_before_the_ack_even_with_a_valid_header(dsn: str) -> None:
    async with served_live(dsn, auth="jwt") as served:
        async with raw(served, additional_headers={"authorization": f"Bearer {token()}"}) as ws:
            await ws.subscribe("1", "subscription { orderUpdated { orderId } }")
            assert await ws.closed() == 4401
        async with raw(served, LEGACY_WS, additional_headers={"authorization": f"Bearer {token()}"}) as ws:
            await ws.subscribe("1", "subscription { orderUpdated { orderId } }", legacy=True)
            assert await ws.closed() == 4401
        assert len(served.live.registry) == 0


def test_a_socket_context_has_no_viewer_until_authenticated() -> None:
    ctx = SocketContext.__new__(SocketContext)
    ctx._viewer = None
    with pytest.raises(Unauthenticated):
        _ = ctx.viewer
    ctx.authenticate(ADMIN, None)
    assert ctx.viewer is ADMIN


async def test_a_customer_sees_only_its_own_orders(dsn: str, conn: asyncpg.Connection) -> None:
    await write_order(conn, "mine", customer_id="alice", status="PLACED")
    await write_order(conn, "theirs", customer_id="bob", status="PLACED")
    async with served_live(dsn, auth="jwt") as served, raw(served) as ws:
        await ws.init({"token": alice()})
        await ws.subscribe("other", 'subscription { orderUpdated(customerId: "bob") { orderId } }')
        error = await ws.recv_type("error")
        assert error["id"] == "other" and error["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        await ws.subscribe("all", f"subscription {{ orderUpdated {{ {ORDER_FIELDS} }} }}")
        await ws.subscribe("own", 'subscription { orderUpdated(customerId: "alice") { orderId } }')
        await ws.subscribe("bobs", 'subscription { orderUpdated(orderId: "theirs") { orderId } }')
        await ws.subscribe("status", "subscription { orderStatusChanged { order { orderId } status } }")
        await until(lambda: len(served.live.registry) == 4)
        for status, n in (("PAID", 2), ("SHIPPED", 3)):
            seq = await write_order(conn, "theirs", customer_id="bob", status=status, event_count=n)
            await write_order(conn, "mine", customer_id="alice", status=status, event_count=n)
            await until(lambda seq=seq: served.live.feed.cursors()["order_summary"] > seq)
        # An order whose customer is not known yet is nobody's.
        await write_order(conn, "anon", customer_id=None, status="PAID")
        got: dict[str, set[str]] = {}
        for _ in range(2 * 3):
            message = await ws.recv_type("next")
            row = data_of(message, "orderUpdated" if message["id"] != "status" else "orderStatusChanged")
            got.setdefault(message["id"], set()).add(row.get("orderId") or row["order"]["orderId"])
        assert got == {"all": {"mine"}, "own": {"mine"}, "status": {"mine"}}
        with pytest.raises(TimeoutError):
            await ws.recv_type("next", within_s=0.5)


@pytest.mark.parametrize("query", [
    'subscription { dailySalesUpdated { day } }',
    'subscription { projectionProgress { name } }',
])
async def test_admin_only_subscriptions(dsn: str, query: str) -> None:
    async with served_live(dsn, auth="jwt") as served, raw(served) as ws:
        await ws.init({"token": alice()})
        await ws.subscribe("1", query)
        error = await ws.recv_type("error")
        assert error["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        transport = WebsocketsTransport(url=served.url, init_payload={"token": alice()})
        async with Client(transport=transport) as session:
            with pytest.raises(TransportQueryError, match="admins only"):
                async for _ in session.subscribe(gql(query)):
                    pass


async def test_the_socket_closes_when_its_token_expires(dsn: str) -> None:
    async with served_live(dsn, auth="jwt") as served:
        for protocol in (None, LEGACY_WS):
            async with (raw(served) if protocol is None else raw(served, protocol)) as ws:
                await ws.init({"token": token(expires_in_s=2)})
                code = await asyncio.wait_for(ws.closed(within_s=10), 10)
                assert code == 4403
