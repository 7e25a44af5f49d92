"""Shared helpers of the API tests: a migrated database, row inserts, running operations.

No tests here. Rows are inserted with plain SQL (not through the projections),
so the API tests do not depend on how the folds fill the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import jwt
import orjson
import uvicorn
from starlette.applications import Starlette
from strawberry.types import ExecutionResult

from api.app import create_app
from api.auth import ADMIN, Viewer
from api.config import ApiConfig
from api.context import Context
from api.db import create_read_pool
from api.schema import schema
from projector.db import migrate
from projector.projections import ALL
from projector.settings import Settings

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "test-secret-that-is-at-least-32-bytes-long!"
_seq = itertools.count(1)


async def migrated(dsn: str) -> None:
    """Create the core tables and every projection's read tables."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, ALL)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def read_pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_read_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def insert_order(conn: asyncpg.Connection, order_id: str, *, customer_id: str | None = "c1",
                       status: str = "PLACED", placed_at: datetime | None = T0,
                       total: Decimal | None = Decimal("10.00"),
                       items: Sequence[dict[str, Any]] | None = None, **columns: Any) -> None:
    items = list(items) if items is not None else [{"sku": "sku-1", "qty": 1, "unit_price": "10.00"}]
    values: dict[str, Any] = {
        "order_id": order_id, "customer_id": customer_id, "status": status,
        "items": orjson.dumps(items).decode(), "item_count": sum(int(i["qty"]) for i in items),
        "total_amount": total, "currency": "EUR" if placed_at else None, "placed_at": placed_at,
        "paid_amount": Decimal(0), "refunded_amount": Decimal(0),
        "last_event_at": placed_at or T0, "event_count": 1, "event_ids": [f"e-{order_id}"],
        "merge_state": "{}", "updated_seq": next(_seq), **columns,
    }
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO order_summary ({names}) VALUES ({params})", *values.values())


async def insert_customer(conn: asyncpg.Connection, customer_id: str, *, order_count: int = 1,
                          total_spent: Decimal = Decimal("10.00")) -> None:
    await conn.execute(
        "INSERT INTO customer_summary (customer_id, order_count, paid_order_count,"
        " cancelled_order_count, total_spent, first_order_at, last_order_at, updated_seq)"
        " VALUES ($1, $2, 0, 0, $3, $4, $4, $5)", customer_id, order_count, total_spent, T0, next(_seq))


async def insert_event(conn: asyncpg.Connection, order_id: str, event_id: str, event_type: str,
                       at: datetime, offset: int = 0) -> None:
    await conn.execute(
        'INSERT INTO order_timeline (event_id, order_id, event_type, occurred_at, topic, "partition",'
        ' "offset", updated_seq) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)',
        event_id, order_id, event_type, at, "orders.placed", offset, next(_seq))


async def insert_product(conn: asyncpg.Connection, sku: str, units: int, revenue: Decimal) -> None:
    await conn.execute(
        "INSERT INTO product_sales (sku, units_ordered, units_paid, revenue, order_count, updated_seq)"
        " VALUES ($1, $2, $2, $3, 1, $4)", sku, units, revenue, next(_seq))


async def insert_day(conn: asyncpg.Connection, day: date, placed: int, revenue: Decimal) -> None:
    await conn.execute(
        "INSERT INTO daily_sales (day, orders_placed, orders_paid, orders_cancelled, revenue, updated_seq)"
        " VALUES ($1, $2, 0, 0, $3, $4)", day, placed, revenue, next(_seq))


async def insert_checkpoint(conn: asyncpg.Connection, projection: str, topic: str, partition: int,
                            next_offset: int) -> None:
    await conn.execute(
        "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition)"
        " DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()",
        projection, topic, partition, next_offset)


async def insert_dead_letter(conn: asyncpg.Connection, offset: int, reason: str,
                             value: bytes | None = b'{"x": 1}') -> None:
    await conn.execute(
        'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, reason, error)'
        " VALUES ('*', 'orders.placed', 0, $1, $2, $3, $4, 'boom')",
        offset, b"key-%d" % offset, value, reason)


class CountingPool:
    """The pool, counting the statements run through it (the API's only path to SQL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.statements.append(sql)
        rows: list[asyncpg.Record] = await self.pool.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self.statements.append(sql)
        row: asyncpg.Record | None = await self.pool.fetchrow(sql, *args)
        return row


async def execute(pool: asyncpg.Pool | CountingPool, query: str,
                  variables: dict[str, Any] | None = None, viewer: Viewer = ADMIN) -> ExecutionResult:
    """Run an operation through ``schema.execute`` with a fresh context."""
    return await schema.execute(query, variable_values=variables,
                                context_value=Context(pool, viewer))


def token(*, role: str = "admin", customer_id: str | None = None, expires_in_s: float = 300,
          key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    payload: dict[str, Any] = {"role": role, "exp": int(time.time() + expires_in_s), **claims}
    if customer_id is not None:
        payload["customer_id"] = customer_id
    return jwt.encode(payload, key, algorithm=algorithm)


@contextlib.asynccontextmanager
async def http_client(dsn: str, *, auth: str = "none",
                      config: ApiConfig | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, with its lifespan running."""
    app: Starlette = create_app(Settings(database_url=dsn, api_auth=auth),
                                config if config is not None else ApiConfig(jwt_secret=SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client


def days(n: int) -> timedelta:
    return timedelta(days=n)


@contextlib.asynccontextmanager
async def served(dsn: str, *, auth: str = "none", config: ApiConfig | None = None) -> AsyncIterator[str]:
    """The app under a real uvicorn on a free loopback port; yields its base URL."""
    app = create_app(Settings(database_url=dsn, api_auth=auth),
                     config if config is not None else ApiConfig(jwt_secret=SECRET))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
