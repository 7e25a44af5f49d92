"""Slow and stalled clients: bounded buffers, newest state per row, the others unaffected.

A client "stops reading" for real: its socket has a small receive buffer and
its transport stops reading, so the server's sends to it block once the
buffers between them are full.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from test_subscriptions_support import (
    Raw,
    Served,
    data_of,
    prepared,
    raw,
    served_live,
    until,
    write_order,
)

from api.config import SocketLimits

PADDING = "x" * 4000  # makes each frame ~4 KB: the buffers fill sooner


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


@contextlib.asynccontextmanager
async def stalling(served: Served) -> AsyncIterator[Raw]:
    """A client with a 4 KiB receive buffer (so that a stop in reading backs up to the server)."""
    host, port = served.host.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    # No compression: the frames keep their size on the wire.
    async with raw(served, sock=sock, max_queue=4, ping_interval=None, compression=None) as ws:
        yield ws


async def _churn(conn: asyncpg.Connection, order_ids: list[str], customer: str, n: int) -> int:
    """One change of each order; returns the sequence of the last."""
    seq = 0
    for order_id in order_ids:
        seq = await write_order(conn, order_id, customer_id=customer, status="PAID", event_count=n,
                                failure_reason=PADDING, notify_too=False)
    await conn.execute("SELECT pg_notify('projector_changes', '{\"tables\": [\"order_summary\"]}')")
    return seq


async def test_a_stalled_client_holds_bounded_memory_and_gets_the_latest_state(dsn: str) -> None:
    slow_orders = [f"slow-{i}" for i in range(5)]
    conn = await asyncpg.connect(dsn)
    try:
        async with served_live(dsn, limits=SocketLimits(buffer_rows=50)) as served, \
                stalling(served) as slow, raw(served) as fast:
            await slow.init()
            await fast.init()
            await slow.subscribe("slow", 'subscription { orderUpdated(customerId: "slow") '
                                         "{ orderId eventCount failureReason } }")
            await fast.subscribe("fast", 'subscription { orderUpdated(orderId: "fast") { eventCount } }')
            await until(lambda: len(served.live.registry) == 2)
            slow.ws.transport.pause_reading()
            buffered, n = 0.0, 0
            for n in range(1, 301):
                await _churn(conn, slow_orders, "slow", n)
                await write_order(conn, "fast", customer_id="fast", event_count=n)
                # The fast client gets every change while the slow one's sends are blocked
                # (each was its own round); a fan-out waiting on the slow client would
                # stop it here (recv_type gives up after 5 s). No timing is asserted.
                while data_of(await fast.recv_type("next"), "orderUpdated")["eventCount"] != n:
                    pass
                buffered = max(buffered, served.sample("api_subscription_buffered_rows"))
                assert served.sample("api_subscription_buffered_rows_max") <= len(slow_orders)
            assert buffered > 0, "the slow client's sends never blocked: the test stalled nothing"
            assert served.sample("api_subscription_messages_coalesced_total") > 0
            # The slow client reads again: it ends with every order's newest state.
            slow.ws.transport.resume_reading()
            last: dict[str, int] = {}
            while any(last.get(o) != n for o in slow_orders):
                row = data_of(await slow.recv_type("next"), "orderUpdated")
                assert row["failureReason"] == PADDING
                last[row["orderId"]] = row["eventCount"]
            assert served.sample("api_websocket_connections_dropped_total") == 0
    finally:
        await conn.close()


async def test_a_client_stalled_too_long_is_dropped_with_4008(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with served_live(dsn, limits=SocketLimits(stall_timeout_s=1.0)) as served:
            async with stalling(served) as slow, raw(served) as fast:
                await slow.init()
                await fast.init()
                await slow.subscribe("1", 'subscription { orderUpdated(customerId: "slow") '
                                          "{ orderId eventCount failureReason } }")
                await fast.subscribe("1", 'subscription { orderUpdated(customerId: "fast") { eventCount } }')
                await until(lambda: len(served.live.registry) == 2)
                slow.ws.transport.pause_reading()
                n = 0
                while served.sample("api_websocket_connections_dropped_total", reason="slow_consumer") == 0:
                    n += 1
                    # Ten changes a round: the socket's buffers fill ten times sooner.
                    await _churn(conn, [f"slow-{(10 * n + k) % 50}" for k in range(10)], "slow", n)
                    await asyncio.sleep(0.01)
                    assert n < 3000, "the stalled client was never dropped"
                await until(lambda: len(served.live.registry) == 1)
                # Closed once its close frame is written, or CLOSE_GRACE_S later.
                await until(lambda: served.sample("api_websocket_connections") == 1, 10)
                # The other client is unaffected.
                await write_order(conn, "f", customer_id="fast", event_count=7)
                assert data_of(await fast.recv_type("next"), "orderUpdated") == {"eventCount": 7}
                slow.ws.transport.resume_reading()
                assert await slow.closed() in (4008, 1006)
    finally:
        await conn.close()


async def test_a_subscription_more_rows_behind_than_its_buffer_ends_with_an_error(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with served_live(dsn, limits=SocketLimits(buffer_rows=10)) as served, stalling(served) as slow:
            await slow.init()
            await slow.subscribe("all", "subscription { orderUpdated { orderId failureReason } }")
            await until(lambda: len(served.live.registry) == 1)
            slow.ws.transport.pause_reading()
            n = 0
            while served.sample("api_subscription_messages_dropped_total", reason="slow_consumer") == 0:
                n += 1
                await _churn(conn, [f"o-{n}-{i}" for i in range(10)], "c", 1)
                assert n < 500, "the subscription never overflowed"
                await asyncio.sleep(0.01)
            # Its buffer was emptied when it failed; it leaves when its task next runs.
            assert served.sample("api_subscription_buffered_rows") == 0
            slow.ws.transport.resume_reading()
            while True:
                message: dict[str, Any] = await slow.recv()
                if message["type"] == "next" and message["payload"].get("errors"):
                    assert message["payload"]["errors"][0]["extensions"]["code"] == "SLOW_CONSUMER"
                    break
            assert (await slow.recv_type("complete"))["id"] == "all"
            await until(lambda: len(served.live.registry) == 0)
    finally:
        await conn.close()
