"""The yardstick for bench_api: Starlette + asyncpg JSON endpoints, no GraphQL.

Each endpoint runs the same SQL as the GraphQL query it is compared with (the
statements are taken from ``api.sql`` at start-up, by running its functions
against a recorder) and returns the same fields as JSON:

- ``POST /order``     {"id"}: one order by id
- ``POST /orders``    {}: the first 20 PAID orders, newest first, with cursors
- ``POST /customer``  {"id"}: one customer and its first 20 orders

    python bench/bare_api.py [--port 8001]     (DATABASE_URL from the environment)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import ADMIN
from api.db import ReadDb, create_read_pool
from api.pagination import Window
from api.sql import customer_summary, order_summary

ORDER_FIELDS = ("order_id", "customer_id", "status", "total_amount", "currency", "placed_at", "paid_at",
                "item_count", "items")
LIST_FIELDS = ("order_id", "customer_id", "status", "total_amount", "placed_at")
CUSTOMER_ORDER_FIELDS = ("order_id", "status", "total_amount", "placed_at")


class _Recorder:
    """Stands in for the pool: records each statement and returns no rows."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.calls.append((query, args))
        return []

    async def fetchrow(self, query: str, *args: Any) -> None:
        self.calls.append((query, args))


async def statements() -> dict[str, tuple[str, tuple[Any, ...]]]:
    """The SQL (and arguments) the GraphQL resolvers run for the three bench queries."""
    rec = _Recorder()
    db = ReadDb(rec)
    win = Window(limit=20)
    await order_summary.by_id(db, ADMIN, "?")
    await order_summary.page_of(db, ADMIN, order_summary.OrderCriteria(statuses=("PAID",)),
                                order_summary.PLACED_AT_DESC, win)
    await customer_summary.by_ids(db, ADMIN, ["?"])
    await order_summary.pages_by_customer(db, ADMIN, ["?"], None, win)
    names = ("order", "orders", "customer", "customer_orders")
    return dict(zip(names, rec.calls, strict=True))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data, default=_default), media_type="application/json")


def _pick(row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: row[f] for f in fields}


def create_bare_app(url: str) -> Starlette:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["sql"] = await statements()
        state["pool"] = await create_read_pool(url)
        try:
            yield
        finally:
            await state["pool"].close()

    async def order(request: Request) -> Response:
        body = orjson.loads(await request.body())
        sql, _ = state["sql"]["order"]
        row = await state["pool"].fetchrow(sql, body["id"])
        return _json({"order": None if row is None else _pick(row, ORDER_FIELDS)})

    async def orders(request: Request) -> Response:
        await request.body()
        sql, args = state["sql"]["orders"]
        rows = await state["pool"].fetch(sql, *args)
        page = rows[:20]
        edges = [{"cursor": order_summary.PLACED_AT_DESC.cursor(r), "node": _pick(r, LIST_FIELDS)}
                 for r in page]
        return _json({"orders": {"edges": edges, "hasNextPage": len(rows) > 20}})

    async def customer(request: Request) -> Response:
        body = orjson.loads(await request.body())
        pool: asyncpg.Pool = state["pool"]
        customer_sql, _ = state["sql"]["customer"]
        orders_sql, args = state["sql"]["customer_orders"]
        row = await pool.fetchrow(customer_sql, [body["id"]])
        if row is None:
            return _json({"customer": None})
        rows = await pool.fetch(orders_sql, [body["id"]], *args[1:])
        return _json({"customer": {
            **_pick(row, ("customer_id", "order_count", "total_spent")),
            "orders": [_pick(r, CUSTOMER_ORDER_FIELDS) for r in rows[:20]]}})

    return Starlette(routes=[Route("/order", order, methods=["POST"]),
                             Route("/orders", orders, methods=["POST"]),
                             Route("/customer", customer, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_READ_URL") or os.environ["DATABASE_URL"]
    uvicorn.run(create_bare_app(url), host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
