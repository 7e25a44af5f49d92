"""The API's GET /metrics, scraped after real queries and subscriptions."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_subscriptions_support import (
    LEGACY_WS,
    data_of,
    prepared,
    raw,
    served_live,
    until,
    write_order,
)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await prepared(pg_dsn)
    return pg_dsn


async def test_metrics_after_queries_and_subscriptions(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_order(conn, "o1", status="PLACED")
        async with served_live(dsn) as served, httpx.AsyncClient(base_url=f"http://{served.host}") as http:
            for _ in range(5):
                ok = await http.post("/graphql", json={
                    "query": 'query OrderById { order(orderId: "o1") { orderId } }'})
                assert ok.json()["data"] == {"order": {"orderId": "o1"}}
            for _ in range(2):  # an argument error: answered, counted as an error
                bad = await http.post("/graphql", json={
                    "query": "query Top { topProducts(limit: 0) { sku } }"})
                assert bad.json()["errors"]
            await http.post("/graphql", content=b"{nope", headers={"content-type": "application/json"})
            by_get = await http.get("/graphql", params={"query": '{ order(orderId: "o1") { status } }'})
            assert by_get.json()["data"]
            async with raw(served) as ws, raw(served, LEGACY_WS) as legacy:
                await ws.init()
                await legacy.init()
                await ws.subscribe("1", 'subscription Watch { orderUpdated(orderId: "o1") { status } }')
                assert data_of(await ws.recv_type("next"), "orderUpdated") == {"status": "PLACED"}
                await legacy.subscribe("1", "subscription { orderStatusChanged { status } }", legacy=True)
                await until(lambda: len(served.live.registry) == 2)
                during = scrape((await http.get("/metrics")).text)
                for status, n in (("PAID", 2), ("SHIPPED", 3)):
                    await write_order(conn, "o1", status=status, event_count=n)
                    assert data_of(await ws.recv_type("next"), "orderUpdated") == {"status": status}
                    assert data_of(await legacy.recv_type("data"), "orderStatusChanged") == {"status": status}
                await ws.send({"type": "complete", "id": "1"})
                await until(lambda: len(served.live.registry) == 1)
                await ws.subscribe("2", '{ order(orderId: "o1") { status } }')  # a query over the socket
                assert data_of(await ws.recv_type("next"), "order") == {"status": "SHIPPED"}
                await asyncio.sleep(0.1)
            await until(lambda: served.sample("api_websocket_connections") == 0)
            response = await http.get("/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            after = scrape(response.text)

        def requests(**labels: str) -> float:
            return value(after, "api_graphql_requests_total", **labels)

        assert requests(operation="OrderById", type="query", outcome="ok") == 5
        assert requests(operation="Top", type="query", outcome="error") == 2
        assert requests(type="unknown", outcome="error") == 1  # the body that was not JSON
        assert requests(operation="anonymous", type="query", outcome="ok") == 2  # GET, and over the socket
        assert requests(operation="Watch", type="subscription", outcome="ok") == 1  # completed by the client
        # The other one ended with its socket.
        assert requests(operation="anonymous", type="subscription", outcome="ok") == 1
        assert value(after, "api_graphql_request_seconds_count", type="query") == 5 + 2 + 2
        assert value(after, "api_graphql_request_seconds_count", type="subscription") == 0
        # While both sockets were open.
        assert value(during, "api_websocket_connections", protocol="graphql-transport-ws") == 1
        assert value(during, "api_websocket_connections", protocol="graphql-ws") == 1
        assert value(during, "api_subscriptions", field="orderUpdated") == 1
        assert value(during, "api_subscriptions", field="orderStatusChanged") == 1
        assert value(after, "api_websocket_connections") == 0
        assert value(after, "api_subscriptions") == 0
        # Four pushes came from the feed (the first message was a read, not a push).
        assert value(after, "api_subscription_push_seconds_count") == 4
        assert 0 < value(after, "api_subscription_push_seconds_sum") < 4 * 1.0
        assert value(after, "api_feed_rows_total", table="order_summary") == 2
        assert value(after, "api_feed_reads_total") >= 2
        for name in ("api_subscription_messages_coalesced_total", "api_subscription_buffered_rows",
                     "api_subscription_buffered_rows_max"):
            assert value(after, name) == 0, name
        assert value(after, "process_resident_memory_bytes") > 10_000_000
    finally:
        await conn.close()


def test_the_counter_is_cheap_on_the_hot_path() -> None:
    # One dict lookup and two prometheus-client calls per request.
    import time

    from api.metrics import ApiMetrics
    metrics = ApiMetrics()
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        metrics.request("OrderById", "query", True, 0.002)
    per_request_us = (time.perf_counter() - started) / n * 1e6
    assert per_request_us < 20, per_request_us
