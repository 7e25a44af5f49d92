"""The Starlette application: /graphql (GraphiQL on GET), /healthz, /readyz."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

from api.context import ApiGraphQL
from api.schema import schema
from projector.db import create_pool
from projector.settings import Settings


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app; the read pool opens in the lifespan."""
    graphql: GraphQL = ApiGraphQL(schema, graphql_ide="graphiql")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = settings.read_url or settings.require_database()
        pool: asyncpg.Pool = await create_pool(url, min_size=1, max_size=8)
        app.state.pool = pool
        graphql.pool = pool  # type: ignore[attr-defined]
        try:
            yield
        finally:
            await pool.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            async with request.app.state.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
