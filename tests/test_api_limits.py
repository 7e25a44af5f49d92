"""Limits (depth, tokens, aliases, body size, read pool settings) and masked internal errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from test_api_support import execute, http_client, insert_order, migrated, read_pool

from api.errors import INTERNAL_MESSAGE
from api.limits import MAX_ALIASES, MAX_BODY_BYTES, MAX_DEPTH, MAX_FIELDS, MAX_TOKENS


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await migrated(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await insert_order(conn, "o1")
    finally:
        await conn.close()
    return pg_dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with read_pool(dsn) as p:
        yield p


def deep(levels: int) -> str:
    """customer { orders { edges { node { customer ... } } } } nested ``levels`` fields deep."""
    fields = ["customer", "orders", "edges", "node"]
    opened = [fields[i % 4] for i in range(levels - 1)]
    return '{ order(orderId: "o1") { ' + " { ".join(opened) + " { __typename" + " }" * len(opened) + " } }"


def many_tokens(count: int) -> str:
    return '{ order(orderId: "o1") { ' + " ".join(["orderId"] * count) + " } }"


def aliases(count: int) -> str:
    return "{ " + " ".join(f'a{i}: order(orderId: "o1") {{ orderId }}' for i in range(count)) + " }"


@pytest.mark.parametrize(("query", "message"), [
    (deep(MAX_DEPTH + 2), f"exceeds maximum operation depth of {MAX_DEPTH}"),
    (many_tokens(MAX_TOKENS), f"Document contains more than {MAX_TOKENS} tokens"),
    (aliases(MAX_ALIASES + 1), f"{MAX_ALIASES}"),
    (many_tokens(MAX_FIELDS), f"selects more than {MAX_FIELDS} fields"),
])
async def test_over_limit_queries_are_refused(pool: asyncpg.Pool, query: str, message: str) -> None:
    for _ in range(2):  # the second time from the document cache
        result = await execute(pool, query)
        assert result.data is None
        assert result.errors is not None
        assert message in result.errors[0].message
        assert "errorId" not in (result.errors[0].extensions or {})


@pytest.mark.parametrize("query", [deep(MAX_DEPTH), many_tokens(MAX_FIELDS - 1), aliases(MAX_ALIASES)])
async def test_queries_at_the_limits_run(pool: asyncpg.Pool, query: str) -> None:
    result = await execute(pool, query)
    assert result.errors is None


async def test_syntax_errors_stay_clear(pool: asyncpg.Pool) -> None:
    result = await execute(pool, "{ order(orderId: ")
    assert result.errors is not None and result.errors[0].message.startswith("Syntax Error")


async def test_read_pool_is_read_only_with_a_statement_timeout(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "5s"
        assert await conn.fetchval("SHOW default_transaction_read_only") == "on"


async def test_internal_errors_are_masked_and_logged_with_an_id(
        dsn: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE product_sales")
    finally:
        await conn.close()
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        result = await execute(pool, '{ order(orderId: "o1") { orderId } product(sku: "a") { sku } }')
    assert result.data == {"order": {"orderId": "o1"}, "product": None}
    assert result.errors is not None and len(result.errors) == 1
    error = result.errors[0]
    assert error.message == INTERNAL_MESSAGE
    assert error.extensions is not None and error.extensions["code"] == "INTERNAL_SERVER_ERROR"
    error_id = error.extensions["errorId"]
    assert "product_sales" not in str(error.formatted)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "product_sales" in logged[0].getMessage()


async def test_over_limit_and_failing_requests_leave_the_server_healthy(dsn: str) -> None:
    async with http_client(dsn) as client:
        for query in (deep(40), many_tokens(10_000), aliases(100)):
            response = await client.post("/graphql", json={"query": query})
            assert response.status_code == 200
            assert response.json()["errors"]
        too_big = await client.post("/graphql", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                                    headers={"content-type": "application/json"})
        assert too_big.status_code == 413
        assert too_big.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b" " * (MAX_BODY_BYTES // 4)

        chunked = await client.post("/graphql", content=chunks(),
                                    headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        fine = await client.post("/graphql", json={"query": '{ order(orderId: "o1") { orderId } }'})
        assert fine.json()["data"] == {"order": {"orderId": "o1"}}
        assert (await client.get("/readyz")).status_code == 200
