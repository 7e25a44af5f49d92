"""Keyset pagination: forward, backward, stable under inserts, ties, and bad cursors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api_support import T0, days, execute, insert_dead_letter, insert_order, migrated, read_pool

from api.pagination import MAX_PAGE

PAGE = """query($first: Int, $after: String, $last: Int, $before: String, $by: OrderOrderBy) {
  orders(first: $first, after: $after, last: $last, before: $before, orderBy: $by) {
    edges { cursor node { orderId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await migrated(pg_dsn)
    return pg_dsn


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with read_pool(dsn) as p:
        yield p


async def page(pool: asyncpg.Pool, **variables: Any) -> dict[str, Any]:
    result = await execute(pool, PAGE, variables)
    assert result.errors is None, result.errors
    assert result.data is not None
    orders: dict[str, Any] = result.data["orders"]
    return orders


def ids(p: dict[str, Any]) -> list[str]:
    return [e["node"]["orderId"] for e in p["edges"]]


async def walk_forward(pool: asyncpg.Pool, size: int, by: str = "PLACED_AT_DESC") -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        p = await page(pool, first=size, after=after, by=by)
        seen += ids(p)
        assert p["pageInfo"]["hasPreviousPage"] == (after is not None)
        if not p["pageInfo"]["hasNextPage"]:
            return seen
        after = p["pageInfo"]["endCursor"]


async def walk_backward(pool: asyncpg.Pool, size: int, by: str = "PLACED_AT_DESC") -> list[str]:
    seen: list[str] = []
    before = None
    while True:
        p = await page(pool, last=size, before=before, by=by)
        seen = ids(p) + seen
        assert p["pageInfo"]["hasNextPage"] == (before is not None)
        if not p["pageInfo"]["hasPreviousPage"]:
            return seen
        before = p["pageInfo"]["startCursor"]


async def test_forward_and_backward_cover_every_order_once(conn: asyncpg.Connection,
                                                           pool: asyncpg.Pool) -> None:
    # Three orders per instant: the order_id tie-break decides among them.
    for i in range(45):
        await insert_order(conn, f"o{i:02}", placed_at=T0 + days(i // 3), total=Decimal(i % 7))
    newest_first = sorted((f"o{i:02}" for i in range(45)), key=lambda o: (-(int(o[1:]) // 3), o))
    assert await walk_forward(pool, 20) == newest_first
    assert await walk_backward(pool, 20) == newest_first
    # PLACED_AT_ASC: oldest first, and the tie-break reversed too (order_id DESC).
    oldest_first = list(reversed(newest_first))
    assert await walk_forward(pool, 7, "PLACED_AT_ASC") == oldest_first
    assert await walk_backward(pool, 7, "PLACED_AT_ASC") == oldest_first
    by_total = sorted((f"o{i:02}" for i in range(45)), key=lambda o: (-(int(o[1:]) % 7), o))
    assert await walk_forward(pool, 11, "TOTAL_AMOUNT_DESC") == by_total
    assert await walk_backward(pool, 11, "TOTAL_AMOUNT_DESC") == by_total


async def test_pages_are_stable_while_orders_are_inserted(conn: asyncpg.Connection,
                                                          pool: asyncpg.Pool) -> None:
    for i in range(30):
        await insert_order(conn, f"o{i:02}", placed_at=T0 + days(i))
    first = await page(pool, first=10)
    assert ids(first) == [f"o{i:02}" for i in range(29, 19, -1)]
    # Newer orders land before the cursor, older ones after it.
    await insert_order(conn, "new-top", placed_at=T0 + days(100))
    await insert_order(conn, "new-mid", placed_at=T0 + days(15))
    await insert_order(conn, "o20a", placed_at=T0 + days(20))  # ties the cursor row, sorts after it
    second = await page(pool, first=10, after=first["pageInfo"]["endCursor"])
    assert ids(second) == ["o20a"] + [f"o{i:02}" for i in range(19, 15, -1)] + ["new-mid"] + [
        f"o{i:02}" for i in range(15, 11, -1)]
    # Backwards from the second page's start lands on the first page again, not on new-top.
    back = await page(pool, last=10, before=second["pageInfo"]["startCursor"])
    assert ids(back) == ids(first)
    assert back["pageInfo"]["hasPreviousPage"] is True  # new-top


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(placed=st.lists(st.integers(0, 4), min_size=0, max_size=25),
       size=st.integers(1, 6), by=st.sampled_from(["PLACED_AT_DESC", "PLACED_AT_ASC", "TOTAL_AMOUNT_DESC"]))
async def test_walks_match_a_sort_property(conn: asyncpg.Connection, pool: asyncpg.Pool,
                                           placed: list[int], size: int, by: str) -> None:
    await conn.execute("TRUNCATE order_summary")
    rows = []
    for i, d in enumerate(placed):
        oid = f"p{i:02}"
        total = Decimal((i * 7) % 3)
        await insert_order(conn, oid, placed_at=T0 + days(d), total=total)
        rows.append((oid, d, total))
    if by == "TOTAL_AMOUNT_DESC":
        expected = [r[0] for r in sorted(rows, key=lambda r: (-r[2], r[0]))]
    else:
        expected = [r[0] for r in sorted(rows, key=lambda r: (-r[1], r[0]))]
        if by == "PLACED_AT_ASC":
            expected.reverse()
    assert await walk_forward(pool, size, by) == expected
    assert await walk_backward(pool, size, by) == expected


def cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


@pytest.mark.parametrize(("variables", "message"), [
    ({"after": "!!!not base64!!!"}, "`after` is not a valid cursor"),
    ({"after": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "`after` is not a valid cursor"),
    ({"after": cursor({"a": 1})}, "`after` is not a valid cursor"),
    ({"after": cursor([2, "orders.placed_at_desc", "2024-03-01T12:00:00+00:00", "o1"])},
     "`after` is not a valid cursor"),
    ({"after": cursor([1, "orders.placed_at_desc", "yesterday", "o1"])}, "`after` is not a valid cursor"),
    ({"after": cursor([1, "orders.placed_at_desc", 5, "o1"])}, "`after` is not a valid cursor"),
    ({"after": cursor([1, "orders.placed_at_desc", "2024-03-01T12:00:00+00:00"])},
     "`after` is not a valid cursor"),
    ({"before": cursor([1, "orders.total_amount_desc", "1.5", "o1"]), "last": 5},
     "`before` is a cursor of another list or ordering"),
    ({"first": MAX_PAGE + 1}, "`first` must be between 0 and 100 (got 101)"),
    ({"last": 1000}, "`last` must be between 0 and 100 (got 1000)"),
    ({"first": -1}, "`first` must be between 0 and 100"),
    ({"first": 1, "last": 1}, "pass `first` or `last`, not both"),
])
async def test_bad_page_arguments_are_clear_errors(pool: asyncpg.Pool, variables: dict[str, Any],
                                                   message: str) -> None:
    result = await execute(pool, PAGE, variables)
    assert result.errors is not None and len(result.errors) == 1
    assert message in result.errors[0].message
    assert result.errors[0].extensions == {"code": "BAD_USER_INPUT"}
    assert result.data is None  # orders is non-null: the error nulls the whole answer


async def test_first_zero_and_max(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    for i in range(105):
        await insert_order(conn, f"o{i:03}", placed_at=T0 + days(i))
    empty = await page(pool, first=0)
    assert empty["edges"] == [] and empty["pageInfo"]["hasNextPage"] is True
    assert len((await page(pool))["edges"]) == 20
    assert len((await page(pool, first=100))["edges"]) == 100


async def test_customer_orders_and_dead_letters_page_forward(conn: asyncpg.Connection,
                                                             pool: asyncpg.Pool) -> None:
    for i in range(5):
        await insert_order(conn, f"o{i}", customer_id="c1", placed_at=T0 + days(i))
        await insert_dead_letter(conn, i, "schema")
    await conn.execute("INSERT INTO customer_summary (customer_id, order_count, paid_order_count,"
                       " cancelled_order_count, total_spent, updated_seq) VALUES ('c1', 5, 0, 0, 0, 1)")
    query = """query($after: String, $dl: String) {
      customer(customerId: "c1") { orders(first: 2, after: $after) { edges { node { orderId } }
        pageInfo { endCursor hasNextPage } } }
      deadLetters(first: 2, after: $dl) { edges { node { offset } } pageInfo { endCursor hasNextPage } } }"""
    orders: list[str] = []
    offsets: list[int] = []
    after = dl = None
    for _ in range(3):
        result = await execute(pool, query, {"after": after, "dl": dl})
        assert result.errors is None and result.data is not None
        o = result.data["customer"]["orders"]
        d = result.data["deadLetters"]
        orders += [e["node"]["orderId"] for e in o["edges"]]
        offsets += [e["node"]["offset"] for e in d["edges"]]
        after, dl = o["pageInfo"]["endCursor"], d["pageInfo"]["endCursor"]
    assert orders == ["o4", "o3", "o2", "o1", "o0"]
    assert offsets == [4, 3, 2, 1, 0]
    assert o["pageInfo"]["hasNextPage"] is False and d["pageInfo"]["hasNextPage"] is False
