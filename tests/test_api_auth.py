"""Auth: 401s over HTTP, JWT checks (HS256, RS256, exp, aud, iss), customer isolation in SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_api_support import (
    SECRET,
    T0,
    CountingPool,
    days,
    execute,
    http_client,
    insert_customer,
    insert_event,
    insert_order,
    migrated,
    read_pool,
    served,
    token,
)
from websockets.typing import Subprotocol

from api.auth import Authenticator, Viewer
from api.config import ApiConfig
from api.errors import Unauthenticated
from projector.errors import ConfigError

ALICE = Viewer("customer", "alice")

GRAPHQL_WS = Subprotocol("graphql-transport-ws")


@pytest.fixture
async def dsn(pg_dsn: str) -> str:
    await migrated(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        for customer, n in (("alice", 3), ("bob", 2)):
            await insert_customer(conn, customer, order_count=n, total_spent=Decimal(n))
            for i in range(n):
                oid = f"{customer}-{i}"
                await insert_order(conn, oid, customer_id=customer, placed_at=T0 + days(i))
                await insert_event(conn, oid, f"ev-{oid}", "OrderPlaced", T0 + days(i))
    finally:
        await conn.close()
    return pg_dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with read_pool(dsn) as p:
        yield p


def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public_pem


async def post(client: httpx.AsyncClient, query: str, bearer: str | None = None,
               authorization: str | None = None) -> httpx.Response:
    headers = {}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    if authorization is not None:
        headers["authorization"] = authorization
    return await client.post("/graphql", json={"query": query}, headers=headers)


ORDER_Q = '{ order(orderId: "alice-0") { orderId } }'


@pytest.mark.parametrize(("authorization", "message"), [
    (None, "missing credentials"),
    ("Basic YWxhZGRpbjpvcGVu", "malformed Authorization header"),
    ("Bearer", "malformed Authorization header"),
    ("Bearer not.a.jwt", "invalid token"),
    (f"Bearer {token(expires_in_s=-10)}", "token expired"),
    (f"Bearer {token(key='another-secret-that-is-also-32-bytes-long')}", "invalid token"),
    (f"Bearer {token(role='root')}", "claim `role` must be admin or customer"),
    (f"Bearer {token(role='customer')}", "needs a `customer_id` claim"),
])
async def test_bad_credentials_get_401_with_a_json_body(dsn: str, authorization: str | None,
                                                        message: str) -> None:
    async with http_client(dsn, auth="jwt") as client:
        response = await post(client, ORDER_Q, authorization=authorization)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["errors"][0]
        assert message in error["message"]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        # A GET that runs a query is gated too; the GraphiQL page is not.
        assert (await client.get("/graphql", params={"query": ORDER_Q})).status_code == 401
        sneaky = await client.get("/graphql?%71uery=" + quote(ORDER_Q))  # decodes to `query`
        assert sneaky.status_code == 401
        assert (await client.get("/graphql", headers={"accept": "text/html"})).status_code == 200


def test_token_without_exp_is_refused() -> None:
    auth = Authenticator("jwt", ApiConfig(jwt_secret=SECRET))
    with pytest.raises(Unauthenticated, match="exp"):
        auth.verify(jwt.encode({"role": "admin"}, SECRET, algorithm="HS256"))


async def test_valid_tokens_pass(dsn: str) -> None:
    async with http_client(dsn, auth="jwt") as client:
        admin = await post(client, "{ projections { name } }", token())
        assert admin.status_code == 200 and admin.json()["data"]["projections"]
        alice = await post(client, ORDER_Q, token(role="customer", customer_id="alice"))
        assert alice.json()["data"] == {"order": {"orderId": "alice-0"}}


async def test_websocket_handshake_needs_a_token(dsn: str) -> None:
    # Browsers cannot set headers on a WebSocket: without one the socket opens,
    # and connection_init must carry the token (tests/test_subscriptions_auth.py).
    # A header that is there is checked at the handshake.
    async with served(dsn, auth="jwt") as host:
        async with websockets.connect(f"ws://{host}/graphql", subprotocols=[GRAPHQL_WS]) as ws:
            await ws.send('{"type": "connection_init"}')
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"ws://{host}/graphql", subprotocols=[GRAPHQL_WS],
                                          additional_headers={"authorization": "Bearer nope"}):
                pass
        headers = {"authorization": f"Bearer {token()}"}
        async with websockets.connect(f"ws://{host}/graphql", subprotocols=[GRAPHQL_WS],
                                      additional_headers=headers) as ws:
            await ws.send('{"type": "connection_init"}')
            assert "connection_ack" in str(await ws.recv())


async def test_rs256(dsn: str) -> None:
    private, public_pem = rsa_keys()
    config = ApiConfig(jwt_public_key=public_pem)
    async with http_client(dsn, auth="jwt", config=config) as client:
        good = await post(client, ORDER_Q, token(key=private, algorithm="RS256"))
        assert good.json()["data"] == {"order": {"orderId": "alice-0"}}
        other_private, _ = rsa_keys()
        forged = await post(client, ORDER_Q, token(key=other_private, algorithm="RS256"))
        assert forged.status_code == 401
        # HS256 with the public key as secret (algorithm confusion) is refused outright.
        hs = await post(client, ORDER_Q, token())
        assert hs.status_code == 401 and "'HS256' is not accepted" in hs.json()["errors"][0]["message"]


async def test_audience_and_issuer(dsn: str) -> None:
    config = ApiConfig(jwt_secret=SECRET, jwt_audience="orders-api", jwt_issuer="https://idp.example")
    async with http_client(dsn, auth="jwt", config=config) as client:
        ok = await post(client, ORDER_Q, token(aud="orders-api", iss="https://idp.example"))
        assert ok.status_code == 200
        claim_sets: list[dict[str, Any]] = [
            {"iss": "https://idp.example"}, {"aud": "orders-api"},
            {"aud": "other", "iss": "https://idp.example"},
            {"aud": "orders-api", "iss": "https://other.example"}]
        for claims in claim_sets:
            assert (await post(client, ORDER_Q, token(**claims))).status_code == 401


async def test_a_customer_sees_only_its_own_orders(pool: asyncpg.Pool) -> None:
    result = await execute(pool, """{
        own: order(orderId: "alice-1") { orderId customer { customerId } timeline { eventId } }
        other: order(orderId: "bob-0") { orderId }
        orders { totalCount edges { node { orderId } } }
        filtered: orders(filter: {customerId: "bob"}) { totalCount edges { node { orderId } } }
        me: customer(customerId: "alice") { customerId orders { totalCount } }
        bob: customer(customerId: "bob") { customerId }
        customers { totalCount edges { node { customerId } } } }""", viewer=ALICE)
    assert result.errors is None
    assert result.data == {
        "own": {"orderId": "alice-1", "customer": {"customerId": "alice"},
                "timeline": [{"eventId": "ev-alice-1"}]},
        "other": None,
        "orders": {"totalCount": 3, "edges": [{"node": {"orderId": f"alice-{i}"}} for i in (2, 1, 0)]},
        "filtered": {"totalCount": 0, "edges": []},
        "me": {"customerId": "alice", "orders": {"totalCount": 3}},
        "bob": None,
        "customers": {"totalCount": 1, "edges": [{"node": {"customerId": "alice"}}]}}


async def test_customer_restriction_is_in_every_statement(pool: asyncpg.Pool) -> None:
    counting = CountingPool(pool)
    await execute(counting, """{ order(orderId: "bob-0") { orderId timeline { eventId } }
        orders { edges { node { orderId customer { customerId } timeline { eventId } } } }
        customer(customerId: "bob") { orders { totalCount edges { node { orderId } } } }
        customers { totalCount } }""", viewer=ALICE)
    reads = [s for s in counting.statements if "projector_checkpoints" not in s]
    assert len(reads) >= 6
    for statement in reads:
        assert "customer_id = $" in statement, statement


@pytest.mark.parametrize("field", ["projections { name }", "deadLetters { totalCount }"])
async def test_admin_only_fields(pool: asyncpg.Pool, field: str) -> None:
    result = await execute(pool, "{ " + field + " }", viewer=ALICE)
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "FORBIDDEN"}
    assert "admins only" in result.errors[0].message


@pytest.mark.parametrize(("env", "variable"), [
    ({"API_JWT_SECRET": "short"}, "API_JWT_SECRET"),
    ({"API_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"},
     "API_JWT_PUBLIC_KEY"),
    ({"API_CORS_ORIGINS": "app.example.com"}, "API_CORS_ORIGINS"),
])
def test_config_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        ApiConfig.from_env(env)


def test_jwt_mode_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="API_JWT_SECRET"):
        Authenticator("jwt", ApiConfig())
    _, public_pem = rsa_keys()
    config = ApiConfig.from_env({"API_JWT_PUBLIC_KEY": public_pem.replace("\n", "\\n"),
                                 "API_CORS_ORIGINS": "https://a.example, http://b.example:8080/"})
    assert config.jwt_public_key == public_pem.strip()
    assert config.cors_origins == ("https://a.example", "http://b.example:8080")
