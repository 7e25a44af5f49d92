"""Shared helpers of the subscription tests: the app under a real uvicorn with its live half,
row writes that notify as the engine does, a raw WebSocket client. No tests here.

Rows are written with plain SQL like the engine writes them (``updated_seq =
nextval(...)``, then one ``NOTIFY projector_changes``), so most tests do not
depend on Kafka; the tests that need the whole path run the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import uvicorn
import websockets
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from test_api_support import SECRET, T0, migrated
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from api.app import create_app
from api.config import ApiConfig, SocketLimits
from api.live import Live
from api.metrics import ApiMetrics
from projector.engine import NOTIFY_CHANNEL
from projector.settings import Settings

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")

ORDER_FIELDS = "orderId customerId status eventCount"


async def prepared(dsn: str) -> None:
    """Migrated (which creates the indexes the change feed wants)."""
    await migrated(dsn)


@dataclass
class Served:
    host: str
    app: Starlette

    @property
    def live(self) -> Live:
        live: Live = self.app.state.live
        return live

    @property
    def metrics(self) -> ApiMetrics:
        metrics: ApiMetrics = self.app.state.metrics
        return metrics

    @property
    def url(self) -> str:
        return f"ws://{self.host}/graphql"

    def sample(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples matching ``labels``, as /metrics shows them."""
        return samples(self.metrics, name, **labels)


def samples(metrics: ApiMetrics, name: str, **labels: str) -> float:
    total = 0.0
    from prometheus_client import generate_latest
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@contextlib.asynccontextmanager
async def served_live(dsn: str, *, auth: str = "none", limits: SocketLimits | None = None,
                      ws_ping_interval: float = 20.0, ws_ping_timeout: float = 20.0) -> AsyncIterator[Served]:
    """The app under a real uvicorn on a free loopback port, lifespan (and feed) running."""
    config = ApiConfig(jwt_secret=SECRET, sockets=limits or SocketLimits())
    app = create_app(Settings(database_url=dsn, api_auth=auth), config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                                           ws_ping_interval=ws_ping_interval,
                                           ws_ping_timeout=ws_ping_timeout))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before starting")
            await asyncio.sleep(0.02)
        yield Served(f"127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def notify(conn: asyncpg.Connection, *tables: str, swapped: bool = False) -> None:
    payload: dict[str, Any] = {"tables": sorted(tables), "seq": 0}
    if swapped:
        payload["swapped"] = True
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, orjson.dumps(payload).decode())


async def write_order(conn: asyncpg.Connection, order_id: str, *, customer_id: str | None = "c1",
                      status: str = "PLACED", event_count: int = 1, placed_at: datetime | None = T0,
                      notify_too: bool = True, **columns: Any) -> int:
    """Insert or update an order row as the engine would (a new updated_seq); returns it."""
    values: dict[str, Any] = {
        "order_id": order_id, "customer_id": customer_id, "status": status, "items": "[]",
        "item_count": 0, "total_amount": Decimal("10.00"), "currency": "EUR", "placed_at": placed_at,
        "paid_amount": Decimal(0), "refunded_amount": Decimal(0), "last_event_at": placed_at or T0,
        "event_count": event_count, "event_ids": [f"e-{order_id}-{event_count}"], "merge_state": "{}",
        **columns}
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    updates = ", ".join(f"{n} = excluded.{n}" for n in values if n != "order_id")
    seq: int = await conn.fetchval(
        f"INSERT INTO order_summary ({names}, updated_seq) VALUES ({params}, "
        "nextval('projector_updated_seq')) ON CONFLICT (order_id) DO UPDATE SET "
        f"{updates}, updated_seq = excluded.updated_seq RETURNING updated_seq", *values.values())
    if notify_too:
        await notify(conn, "order_summary")
    return seq


async def write_day(conn: asyncpg.Connection, day: date, placed: int, revenue: Decimal = Decimal(0),
                    *, notify_too: bool = True) -> None:
    await conn.execute(
        "INSERT INTO daily_sales (day, orders_placed, orders_paid, orders_cancelled, revenue, updated_seq)"
        " VALUES ($1, $2, 0, 0, $3, nextval('projector_updated_seq')) ON CONFLICT (day) DO UPDATE SET"
        " orders_placed = excluded.orders_placed, revenue = excluded.revenue,"
        " updated_seq = excluded.updated_seq", day, placed, revenue)
    if notify_too:
        await notify(conn, "daily_sales")


class Raw:
    """A raw WebSocket client speaking JSON messages (for protocol conformance)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def recv(self, within_s: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), within_s)
        assert isinstance(raw, str), "GraphQL over WebSocket sends text frames"
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def recv_type(self, kind: str, within_s: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind``, skipping keep-alives."""
        while True:
            message = await self.recv(within_s)
            if message["type"] in ("ka", "ping") and kind not in ("ka", "ping"):
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                continue
            assert message["type"] == kind, message
            return message

    async def closed(self, within_s: float = 15.0) -> int | None:
        """Read until the server closes; its close code."""
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), within_s)
        return self.ws.close_code

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "connection_init", **({"payload": payload} if payload is not None else {})})
        return await self.recv_type("connection_ack")

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None,
                        legacy: bool = False) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        await self.send({"type": "start" if legacy else "subscribe", "id": op_id, "payload": payload})


@contextlib.asynccontextmanager
async def raw(served: Served | str, protocol: Subprotocol = TRANSPORT_WS,
              **kwargs: Any) -> AsyncIterator[Raw]:
    url = served.url if isinstance(served, Served) else served
    async with websockets.connect(url, subprotocols=[protocol], **kwargs) as ws:
        yield Raw(ws)


async def until(condition: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition()`` (sync) until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def data_of(message: dict[str, Any], field: str) -> Any:
    """The field's value in a next/data message."""
    assert message["type"] in ("next", "data"), message
    payload = message["payload"]
    assert not payload.get("errors"), payload
    return payload["data"][field]


def ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [r["orderId"] for r in rows]
