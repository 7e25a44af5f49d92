"""The app over HTTP (in-process ASGI, and a real uvicorn for WebSocket): routes, gzip, CORS."""

from __future__ import annotations

import gzip

import asyncpg
import httpx
import orjson
import pytest
import websockets
from test_api_support import SECRET, T0, days, http_client, insert_order, migrated, served
from websockets.typing import Subprotocol

from api.config import ApiConfig

GRAPHQL_WS = Subprotocol("graphql-transport-ws")


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await migrated(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        for i in range(60):
            await insert_order(conn, f"o{i:02}", placed_at=T0 + days(i))
    finally:
        await conn.close()
    return pg_dsn


async def test_graphiql_health_and_readiness(dsn: str) -> None:
    async with http_client(dsn) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_post_and_get_queries_carry_freshness(dsn: str) -> None:
    async with http_client(dsn) as client:
        response = await client.post("/graphql", json={
            "query": "query($id: ID!) { order(orderId: $id) { orderId totalAmount } }",
            "variables": {"id": "o01"}})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["data"] == {"order": {"orderId": "o01", "totalAmount": "10.00"}}
        assert set(body["extensions"]["freshness"]) == {"asOf", "lagEvents", "checkpoints"}
        by_get = await client.get("/graphql", params={"query": '{ order(orderId: "o02") { orderId } }'})
        assert by_get.json()["data"] == {"order": {"orderId": "o02"}}


async def test_mutations_are_not_allowed_and_bad_json_is_400(dsn: str) -> None:
    async with http_client(dsn) as client:
        bad = await client.post("/graphql", content=b"{not json",
                                headers={"content-type": "application/json"})
        assert bad.status_code == 400
        missing = await client.post("/graphql", json={"variables": {}})
        assert missing.status_code == 400


async def test_large_responses_are_gzipped(dsn: str) -> None:
    async with http_client(dsn) as client:
        small = await client.post("/graphql", json={"query": '{ order(orderId: "o01") { orderId } }'},
                                  headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers
        query = ("{ orders(first: 50) { edges { cursor node { orderId placedAt totalAmount "
                 "items { sku } } } } }")
        large = await client.post("/graphql", json={"query": query}, headers={"accept-encoding": "gzip"})
        assert large.headers["content-encoding"] == "gzip"
        assert len(large.json()["data"]["orders"]["edges"]) == 50  # httpx decoded it
        raw = await client.post("/graphql", json={"query": query}, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in raw.headers
        assert orjson.loads(raw.content)["data"] == large.json()["data"]
        assert gzip.compress(raw.content)  # sanity: the body is plain JSON
        assert large.headers["vary"] == raw.headers["vary"] == "Accept-Encoding"
        # Strawberry's path (a query in the URL) and /metrics are gzipped too.
        got = await client.get("/graphql", params={"query": query}, headers={"accept-encoding": "gzip"})
        assert got.headers["content-encoding"] == "gzip"
        assert got.json()["data"] == large.json()["data"]
        metrics = await client.get("/metrics", headers={"accept-encoding": "gzip"})
        assert metrics.headers["content-encoding"] == "gzip"
        assert "api_feed_resyncs_total" in metrics.text


async def test_cors_only_for_configured_origins(dsn: str) -> None:
    preflight = {"origin": "https://app.example.com", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    async with http_client(dsn) as client:
        response = await client.options("/graphql", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    config = ApiConfig(jwt_secret=SECRET, cors_origins=("https://app.example.com",))
    async with http_client(dsn, config=config) as client:
        response = await client.options("/graphql", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await client.options("/graphql", headers={**preflight, "origin": "https://evil.example"})
        assert other.status_code == 400


async def test_over_real_http_and_websocket(dsn: str) -> None:
    async with served(dsn) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:
            response = await client.post("/graphql", json={"query": '{ order(orderId: "o03") { orderId } }'})
            assert response.json()["data"] == {"order": {"orderId": "o03"}}
        # The WebSocket route stays mounted (subscriptions come later); a query works over it.
        async with websockets.connect(f"ws://{host}/graphql", subprotocols=[GRAPHQL_WS]) as ws:
            await ws.send(orjson.dumps({"type": "connection_init"}).decode())
            assert orjson.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(orjson.dumps({"type": "subscribe", "id": "1", "payload": {
                "query": '{ order(orderId: "o04") { orderId } }'}}).decode())
            message = await ws.recv()
            assert isinstance(message, str)  # text frames, as the protocol wants
            assert orjson.loads(message)["payload"]["data"] == {"order": {"orderId": "o04"}}
