"""The compiled executor (api.fastpath) answers exactly as graphql-core does.

Every document runs twice through ``schema.execute``: once as served, once with
the plans switched off (graphql-core executes everything); data and errors must
be the same, and the plain documents must really have taken the fast path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
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
    insert_customer,
    insert_day,
    insert_dead_letter,
    insert_event,
    insert_order,
    insert_product,
    migrated,
    read_pool,
)

from api import fastpath
from api.auth import Viewer
from api.execution import ApiSchema
from api.schema import schema


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    await migrated(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await insert_customer(conn, "c1")
        for i in range(5):
            await insert_order(conn, f"o{i}", customer_id="c1", status=["PAID", "PLACED"][i % 2],
                               placed_at=T0 + days(i), total=Decimal(i) + Decimal("0.5"),
                               items=[{"sku": "a", "qty": i + 1, "unit_price": None if i % 2 else "1.5"}])
            await insert_event(conn, f"o{i}", f"e{i}", "OrderPlaced", T0 + days(i))
        await insert_order(conn, "ghost", customer_id=None, status="PAID", placed_at=None, total=None,
                           items=[])
        await insert_product(conn, "a", 3, Decimal("4.5"))
        await insert_day(conn, date(2024, 3, 1), 1, Decimal("1.5"))
        await insert_dead_letter(conn, 2**40, "schema")
    finally:
        await conn.close()
    async with read_pool(pg_dsn) as p:
        yield p


@pytest.fixture
def fast_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Records, per execution, whether the compiled plan answered."""
    runs: list[bool] = []
    original = fastpath._run

    async def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await original(*args, **kwargs)
        except fastpath._Unexpected:
            runs.append(False)
            raise
        runs.append(result is not None)
        return result

    monkeypatch.setattr(fastpath, "_run", spy)
    yield runs


async def both(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, query: str,
               variables: dict[str, Any] | None = None,
               viewer: Viewer | None = None) -> tuple[Any, Any]:
    """Run ``query`` on the lean lane, on strawberry's path with the compiled
    executor, and on strawberry's path with graphql-core: all must agree."""
    kwargs: dict[str, Any] = {} if viewer is None else {"viewer": viewer}
    fast = await execute(pool, query, variables, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(ApiSchema, "_lean", lambda *a: None)
        mid = await execute(pool, query, variables, **kwargs)
        m.setattr(fastpath, "cached_plan", lambda *a: None)
        slow = await execute(pool, query, variables, **kwargs)

    def shape(result: Any) -> Any:
        errors = [(e.message, e.path, [(loc.line, loc.column) for loc in e.locations or ()],
                   {k: v for k, v in (e.extensions or {}).items() if k != "errorId"})
                  for e in result.errors or ()]
        return result.data, errors, result.extensions["freshness"]["checkpoints"]

    assert shape(fast) == shape(mid) == shape(slow)
    return fast, slow


PLAIN = [
    ("query($id: ID!) { order(orderId: $id) { __typename orderId customerId status"
     " items { sku qty unitPrice } itemCount totalAmount currency placedAt paidAt lastEventAt"
     " eventCount paidAmount } }", {"id": "o2"}),
    ('{ a: order(orderId: "o1") { id: orderId s: status } b: order(orderId: "nope") { orderId }'
     ' c: order(orderId: "ghost") { orderId placedAt totalAmount items { sku } } }', None),
    ("query($f: OrderFilter, $by: OrderOrderBy, $n: Int) { orders(filter: $f, orderBy: $by, first: $n) {"
     " edges { cursor node { orderId totalAmount status } } pageInfo { hasNextPage hasPreviousPage"
     " startCursor endCursor } } }", {"f": {"status": ["PAID"]}, "by": "TOTAL_AMOUNT_DESC", "n": 2}),
    ('{ orders(last: 2, filter: {customerId: "c1", minTotal: "1"}) { edges { node { orderId } } }'
     ' product(sku: "a") { sku unitsOrdered revenue } topProducts(by: UNITS) { sku }'
     ' dailySales(from: "2024-01-01", to: "2024-12-31") { day revenue ordersPlaced } }', None),
    ("{ deadLetters { edges { node { offset partition topic key payloadTruncated firstSeenAt } } } }", None),
    # Nested resolvers: called during completion, batched level by level.
    ('{ order(orderId: "o1") { orderId customer { customerId orderCount } timeline { eventId offset } } }',
     None),
    ("query($id: ID!) { customer(customerId: $id) { customerId totalSpent orders(first: 2) { totalCount"
     " edges { node { orderId customer { customerId } timeline { eventType } } } pageInfo { hasNextPage } }"
     " paid: orders(status: [PAID]) { totalCount } } }", {"id": "c1"}),
    ("{ customers { totalCount edges { node { customerId orders { edges { node { orderId } } } } } }"
     " orders(first: 3) { totalCount edges { node { orderId customer { customerId } } } } }", None),
    # Variables that are not all strings: graphql-core coerces them (an ID from a number).
    ("query($id: ID!, $n: Int) { order(orderId: $id) { orderId } orders(first: $n) { edges { cursor } } }",
     {"id": 2, "n": 1}),
    ("query($id: ID!, $a: String) { order(orderId: $id) { orderId } orders(first: 1, after: $a) {"
     " edges { cursor } } }", {"id": "o1", "a": None}),
]


@pytest.mark.parametrize(("query", "variables"), PLAIN)
async def test_plain_documents_take_the_fast_path(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
                                                  fast_runs: list[bool], query: str,
                                                  variables: dict[str, Any] | None) -> None:
    fast, _ = await both(pool, monkeypatch, query, variables)
    assert fast.errors is None
    assert fast_runs[:2] == [True, True]  # the lean lane, then strawberry's path


NOT_PLAIN = [
    # Fragments, directives, repeated keys, introspection.
    '{ order(orderId: "o1") { ...F } } fragment F on Order { orderId status }',
    'query($x: Boolean!) { order(orderId: "o1") { orderId status @include(if: $x) } }',
    '{ order(orderId: "o1") { orderId } order(orderId: "o1") { status } }',
    "{ __typename orders { totalCount } }",
    '{ __type(name: "Order") { name } }',
]


@pytest.mark.parametrize("query", NOT_PLAIN)
async def test_other_documents_go_to_graphql_core(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
                                                  fast_runs: list[bool], query: str) -> None:
    fast, _ = await both(pool, monkeypatch, query, {"x": True} if "$x" in query else None)
    assert fast.errors is None
    assert True not in fast_runs


ERRORS = [
    ("{ orders(first: 500) { edges { cursor } } }", None),
    ('{ order(orderId: "o1") { orderId } orders(after: "junk") { edges { cursor } } }', None),
    ('query($a: String) { order(orderId: "o1") { orderId } o: orders(after: $a) { edges { cursor } } }',
     {"a": "bm9wZQ"}),
    ("query($id: ID!) { order(orderId: $id) { orderId } }", {}),
    ("query($n: Int) { orders(first: $n) { edges { cursor } } }", {"n": "ten"}),
    ('{ topProducts(limit: 0) { sku } order(orderId: "o1") { orderId } }', None),
    ('{ order(orderId: "o1") { customer { customerId } } orders(first: 500) { totalCount } }', None),
    # Below the root: graphql-core runs it again and reports.
    ('{ customer(customerId: "c1") { customerId orders(first: 500) { totalCount } } }', None),
    ('{ customers { edges { node { orders(after: "junk") { totalCount } } } } }', None),
]


@pytest.mark.parametrize(("query", "variables"), ERRORS)
async def test_errors_match(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, query: str,
                           variables: dict[str, Any] | None) -> None:
    fast, _ = await both(pool, monkeypatch, query, variables)
    assert fast.errors


async def test_forbidden_and_internal_errors_match(pg_dsn: str, pool: asyncpg.Pool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    customer = Viewer("customer", "c1")
    await both(pool, monkeypatch, '{ projections { name } order(orderId: "o1") { orderId } }',
               viewer=customer)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DROP TABLE product_sales")
    finally:
        await conn.close()
    fast, _ = await both(pool, monkeypatch, '{ product(sku: "a") { sku } order(orderId: "o1") { orderId } }')
    assert fast.data == {"product": None, "order": {"orderId": "o1"}}
    assert fast.errors is not None and fast.errors[0].extensions is not None
    assert fast.errors[0].extensions["code"] == "INTERNAL_SERVER_ERROR"


async def test_a_surprising_result_falls_back_to_graphql_core(pool: asyncpg.Pool,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             fast_runs: list[bool]) -> None:
    # A non-null field that comes back null: graphql-core reports it.
    from api.types import order as order_types

    original = order_types.Order.from_row

    def broken(row: Any) -> Any:
        made = original(row)
        made.status = None  # type: ignore[assignment]
        return made

    monkeypatch.setattr(order_types.Order, "from_row", broken)
    fast, _ = await both(pool, monkeypatch, '{ order(orderId: "o1") { orderId status } }')
    assert fast_runs == [False, False]
    assert fast.data == {"order": None}
    assert fast.errors is not None and fast.errors[0].path == ["order", "status"]


def test_the_schema_uses_the_fast_executor_and_the_lean_lane() -> None:
    assert isinstance(schema, ApiSchema)
    assert schema._get_execute_function() is fastpath.execute
    assert schema._lean(PLAIN[0][0], None, None) is not None
    assert schema._lean(NOT_PLAIN[0], None, None) is None
    assert schema._lean("{ nope }", None, None) is None  # invalid: strawberry's path reports it


async def test_nested_resolvers_batch_the_same_on_both_paths(pool: asyncpg.Pool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    query = ("{ orders { edges { node { orderId customer { customerId } timeline { eventId } } } }"
             " customers { edges { node { orders(first: 2) { totalCount edges { node { orderId } } } } } } }")
    counts = []
    for disabled in (False, True):
        counting = CountingPool(pool)
        with monkeypatch.context() as m:
            if disabled:
                m.setattr(fastpath, "cached_plan", lambda *a: None)
            result = await execute(counting, query)
        assert result.errors is None
        counts.append(len([s for s in counting.statements if "projector_checkpoints" not in s]))
    # orders; customers page; then customer + timeline loaders and customer pages + counts.
    assert counts[0] == counts[1] == 6


def test_order_rows_fill_exactly_the_attribute_fields() -> None:
    # Order.from_row fills __dict__ from the row: the columns must be the fields.
    from api.sql.order_summary import COLUMNS
    from api.types.order import Order

    attributes = {f.name for f in dataclasses.fields(Order) if f.init}
    assert attributes == {c.strip() for c in COLUMNS.split(",")}
