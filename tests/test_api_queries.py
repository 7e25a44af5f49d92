"""The queries through ``schema.execute`` against a real PostgreSQL: shapes, nesting, freshness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from test_api_support import (
    T0,
    CountingPool,
    days,
    execute,
    insert_checkpoint,
    insert_customer,
    insert_day,
    insert_dead_letter,
    insert_event,
    insert_order,
    insert_product,
    migrated,
    read_pool,
)

ORDER_FIELDS = """orderId customerId status items { sku qty unitPrice } itemCount totalAmount currency
  placedAt paidAt lastEventAt failureReason carrier trackingNumber"""


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    await migrated(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await insert_customer(conn, "c1", order_count=2, total_spent=Decimal("25.50"))
        await insert_customer(conn, "c2", order_count=1, total_spent=Decimal("99.00"))
        await insert_order(conn, "o1", customer_id="c1", status="PAID", placed_at=T0,
                           total=Decimal("10.00"), paid_at=T0 + days(1))
        await insert_order(conn, "o2", customer_id="c1", placed_at=T0 + days(1), total=Decimal("15.50"),
                           items=[{"sku": "a", "qty": 2, "unit_price": None},
                                  {"sku": "b", "qty": 1, "unit_price": "3.25"}])
        await insert_order(conn, "o3", customer_id="c2", status="CANCELLED", placed_at=T0 + days(2),
                           total=Decimal("99.00"), failure_reason="cancelled")
        # Known only from a later event: no OrderPlaced yet.
        await insert_order(conn, "o4", customer_id=None, status="PAID", placed_at=None, total=None,
                           items=[])
        await insert_event(conn, "o1", "e1", "OrderPlaced", T0, 5)
        await insert_event(conn, "o1", "e2", "PaymentSucceeded", T0 + days(1), 6)
        await insert_event(conn, "o2", "e3", "OrderPlaced", T0 + days(1), 7)
        await insert_product(conn, "a", 10, Decimal("100"))
        await insert_product(conn, "b", 30, Decimal("50"))
        await insert_day(conn, date(2024, 3, 1), 1, Decimal("10.00"))
        await insert_day(conn, date(2024, 3, 3), 1, Decimal("99.00"))
        await insert_checkpoint(conn, "orders", "orders.placed", 0, 42)
        await insert_checkpoint(conn, "orders", "orders.placed", 1, 7)
        await insert_checkpoint(conn, "timeline", "orders.placed", 0, 40)
        await insert_dead_letter(conn, 3, "schema")
    finally:
        await conn.close()
    async with read_pool(pg_dsn) as p:
        yield p


async def test_order_by_id(pool: asyncpg.Pool) -> None:
    result = await execute(pool, f"query($id: ID!) {{ order(orderId: $id) {{ {ORDER_FIELDS} }} }}",
                           {"id": "o2"})
    assert result.errors is None
    assert result.data == {"order": {
        "orderId": "o2", "customerId": "c1", "status": "PLACED",
        "items": [{"sku": "a", "qty": 2, "unitPrice": None}, {"sku": "b", "qty": 1, "unitPrice": "3.25"}],
        "itemCount": 3, "totalAmount": "15.50", "currency": "EUR",
        "placedAt": (T0 + days(1)).isoformat(), "paidAt": None,
        "lastEventAt": (T0 + days(1)).isoformat(), "failureReason": None, "carrier": None,
        "trackingNumber": None}}


async def test_order_unknown_is_null_and_order_without_placed_is_readable(pool: asyncpg.Pool) -> None:
    result = await execute(pool, '{ a: order(orderId: "nope") { orderId } b: order(orderId: "o4") '
                                 "{ orderId status placedAt customer { customerId } } }")
    assert result.errors is None
    assert result.data == {"a": None, "b": {"orderId": "o4", "status": "PAID", "placedAt": None,
                                            "customer": None}}


async def test_orders_exclude_orders_without_placed_at(pool: asyncpg.Pool) -> None:
    result = await execute(pool, "{ orders { totalCount edges { node { orderId } } } }")
    assert result.errors is None
    assert result.data is not None
    assert [e["node"]["orderId"] for e in result.data["orders"]["edges"]] == ["o3", "o2", "o1"]
    assert result.data["orders"]["totalCount"] == 3


@pytest.mark.parametrize(("order_by", "expected"), [
    ("PLACED_AT_DESC", ["o3", "o2", "o1"]),
    ("PLACED_AT_ASC", ["o1", "o2", "o3"]),
    ("TOTAL_AMOUNT_DESC", ["o3", "o2", "o1"]),
])
async def test_orders_order_by(pool: asyncpg.Pool, order_by: str, expected: list[str]) -> None:
    result = await execute(pool, f"{{ orders(orderBy: {order_by}) {{ edges {{ node {{ orderId }} }} }} }}")
    assert result.errors is None and result.data is not None
    assert [e["node"]["orderId"] for e in result.data["orders"]["edges"]] == expected


@pytest.mark.parametrize(("filter_", "expected"), [
    ("{status: [PAID]}", ["o1"]),
    ("{status: [PAID, CANCELLED]}", ["o3", "o1"]),
    ("{status: []}", []),
    ('{customerId: "c1"}', ["o2", "o1"]),
    ('{placedAfter: "2024-03-02T12:00:00+00:00"}', ["o3", "o2"]),
    ('{placedBefore: "2024-03-02T12:00:00+00:00"}', ["o1"]),
    ('{minTotal: "15.5"}', ["o3", "o2"]),
    ('{customerId: "c1", status: [PLACED], minTotal: "1"}', ["o2"]),
])
async def test_orders_filter(pool: asyncpg.Pool, filter_: str, expected: list[str]) -> None:
    query = f"{{ orders(filter: {filter_}) {{ totalCount edges {{ node {{ orderId }} }} }} }}"
    result = await execute(pool, query)
    assert result.errors is None and result.data is not None
    assert [e["node"]["orderId"] for e in result.data["orders"]["edges"]] == expected
    assert result.data["orders"]["totalCount"] == len(expected)


async def test_customer_with_orders_and_timeline(pool: asyncpg.Pool) -> None:
    result = await execute(pool, """{ customer(customerId: "c1") {
        customerId orderCount totalSpent
        orders(first: 1) { totalCount pageInfo { hasNextPage } edges { node { orderId
          timeline { eventId eventType offset } customer { customerId } } } }
        paid: orders(status: [PAID]) { totalCount edges { node { orderId timeline { eventId } } } } } }""")
    assert result.errors is None
    assert result.data == {"customer": {
        "customerId": "c1", "orderCount": 2, "totalSpent": "25.50",
        "orders": {"totalCount": 2, "pageInfo": {"hasNextPage": True}, "edges": [
            {"node": {"orderId": "o2", "customer": {"customerId": "c1"},
                      "timeline": [{"eventId": "e3", "eventType": "OrderPlaced", "offset": 7}]}}]},
        "paid": {"totalCount": 1, "edges": [{"node": {"orderId": "o1", "timeline": [
            {"eventId": "e1"}, {"eventId": "e2"}]}}]}}}


async def test_customers(pool: asyncpg.Pool) -> None:
    result = await execute(pool, "{ customers { totalCount edges { node { customerId totalSpent } } } "
                                 "byId: customers(orderBy: CUSTOMER_ID_ASC, first: 1) "
                                 "{ edges { node { customerId } } } }")
    assert result.errors is None and result.data is not None
    assert [e["node"]["customerId"] for e in result.data["customers"]["edges"]] == ["c2", "c1"]
    assert result.data["customers"]["totalCount"] == 2
    assert result.data["byId"]["edges"] == [{"node": {"customerId": "c1"}}]


async def test_products_and_daily_sales(pool: asyncpg.Pool) -> None:
    result = await execute(pool, """{ product(sku: "a") { sku unitsOrdered revenue }
        missing: product(sku: "zz") { sku }
        byRevenue: topProducts { sku } byUnits: topProducts(by: UNITS, limit: 1) { sku }
        dailySales(from: "2024-03-01", to: "2024-03-02") { day ordersPlaced revenue } }""")
    assert result.errors is None
    assert result.data == {
        "product": {"sku": "a", "unitsOrdered": 10, "revenue": "100"}, "missing": None,
        "byRevenue": [{"sku": "a"}, {"sku": "b"}], "byUnits": [{"sku": "b"}],
        "dailySales": [{"day": "2024-03-01", "ordersPlaced": 1, "revenue": "10.00"}]}


@pytest.mark.parametrize(("query", "message"), [
    ('{ dailySales(from: "2024-03-02", to: "2024-03-01") { day } }', "`to` is before `from`"),
    ('{ dailySales(from: "2020-01-01", to: "2024-03-01") { day } }', "at most 1000 days"),
    ("{ topProducts(limit: 0) { sku } }", "`limit` must be between 1 and 100"),
])
async def test_argument_errors(pool: asyncpg.Pool, query: str, message: str) -> None:
    result = await execute(pool, query)
    assert result.errors is not None
    assert message in result.errors[0].message


async def test_projections_and_dead_letters(pool: asyncpg.Pool) -> None:
    result = await execute(pool, """{ projections { name version state lag eventsPerSecond
        partitions { topic partition checkpoint endOffset lag } }
        deadLetters { totalCount edges { node { topic offset key reason error payload payloadBytes
          payloadTruncated } } } }""")
    assert result.errors is None and result.data is not None
    by_name = {p["name"]: p for p in result.data["projections"]}
    assert by_name["orders"]["state"] == "LIVE"
    assert by_name["orders"]["lag"] is None and by_name["orders"]["eventsPerSecond"] is None
    assert by_name["orders"]["partitions"] == [
        {"topic": "orders.placed", "partition": 0, "checkpoint": 42, "endOffset": None, "lag": None},
        {"topic": "orders.placed", "partition": 1, "checkpoint": 7, "endOffset": None, "lag": None}]
    assert result.data["deadLetters"] == {"totalCount": 1, "edges": [{"node": {
        "topic": "orders.placed", "offset": 3, "key": "key-3", "reason": "schema", "error": "boom",
        "payload": '{"x": 1}', "payloadBytes": 8, "payloadTruncated": False}}]}


async def test_dead_letter_payload_is_truncated(pg_dsn: str, pool: asyncpg.Pool) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await insert_dead_letter(conn, 9, "poison", value=b"\xff" + b"x" * 10_000)
    finally:
        await conn.close()
    result = await execute(pool, '{ deadLetters(reason: "poison") { edges { node { payload payloadBytes '
                                 "payloadTruncated } } } }")
    assert result.errors is None and result.data is not None
    node = result.data["deadLetters"]["edges"][0]["node"]
    assert node["payloadBytes"] == 10_001 and node["payloadTruncated"] is True
    assert node["payload"] == "\ufffd" + "x" * 4095


async def test_freshness_names_the_projections_read(pool: asyncpg.Pool) -> None:
    result = await execute(pool, '{ order(orderId: "o1") { orderId } }')
    assert result.extensions is not None
    freshness = result.extensions["freshness"]
    assert freshness["asOf"] is not None and freshness["lagEvents"] is None
    assert freshness["checkpoints"] == {"orders": {"orders.placed": {"0": 42, "1": 7}}}

    result = await execute(pool, '{ order(orderId: "o1") { timeline { eventId } } }')
    assert result.extensions is not None
    assert result.extensions["freshness"]["checkpoints"] == {
        "orders": {"orders.placed": {"0": 42, "1": 7}}, "timeline": {"orders.placed": {"0": 40}}}

    result = await execute(pool, "{ deadLetters { totalCount } }")
    assert result.extensions is not None
    assert result.extensions["freshness"]["checkpoints"] == {}


async def test_freshness_counts_the_events_behind_the_published_log_ends(
        pg_dsn: str, pool: asyncpg.Pool) -> None:
    async def lag_events(query: str) -> Any:
        result = await execute(pool, query)
        assert result.extensions is not None
        return result.extensions["freshness"]["lagEvents"]

    async def publish_end(partition: int, end_offset: int) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                "INSERT INTO partition_status (topic, partition, end_offset, owner)"
                " VALUES ('orders.placed', $1, $2, 'test') ON CONFLICT (topic, partition)"
                " DO UPDATE SET end_offset = excluded.end_offset", partition, end_offset)
        finally:
            await conn.close()

    order = '{ order(orderId: "o1") { orderId } }'
    # One of the orders projection's partitions has no published end: unknown, not 0.
    await publish_end(0, 50)
    assert await lag_events(order) is None
    await publish_end(1, 7)
    assert await lag_events(order) == 8  # (50 - 42) + (7 - 7)
    # The timeline projection's one checkpoint (40) shares partition 0's end.
    assert await lag_events('{ order(orderId: "o1") { timeline { eventId } } }') == 8 + 10
    # A checkpoint behind a log end it once passed (the topic was recreated) is not negative lag.
    await publish_end(1, 3)
    assert await lag_events(order) == 8
    # No projection's table read: nothing to be behind on.
    assert await lag_events("{ deadLetters { totalCount } }") is None


async def test_freshness_present_on_validation_errors(pool: asyncpg.Pool) -> None:
    result = await execute(pool, "{ nope }")
    assert result.errors is not None
    assert result.extensions is not None and "freshness" in result.extensions


async def test_statements_per_request_do_not_grow_with_rows(pg_dsn: str, pool: asyncpg.Pool) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        for i in range(30):
            await insert_customer(conn, f"n{i:02}", total_spent=Decimal(i))
            for j in range(3):
                oid = f"n{i:02}-{j}"
                await insert_order(conn, oid, customer_id=f"n{i:02}", placed_at=T0 + days(j))
                await insert_event(conn, oid, f"ev-{oid}", "OrderPlaced", T0 + days(j))
    finally:
        await conn.close()
    query = """query($n: Int) { customers(first: $n) { edges { node { customerId
        orders(first: 5) { totalCount edges { node { orderId customer { customerId }
          timeline { eventId } } } } } } } }"""
    counts = []
    for n in (1, 10, 30):
        counting = CountingPool(pool)
        result = await execute(counting, query, {"n": n})
        assert result.errors is None and result.data is not None
        assert len(result.data["customers"]["edges"]) == n
        # customers, their orders (one LATERAL), counts, customers of orders, timelines.
        reads = [s for s in counting.statements if "projector_checkpoints" not in s]
        counts.append(len(reads))
    assert counts == [5, 5, 5]
