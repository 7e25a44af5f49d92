"""The Starlette application: /graphql (GraphiQL on GET, WebSocket), /healthz, /readyz, /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute, request_response

from api.auth import Authenticator, AuthGate
from api.config import ApiConfig
from api.db import create_read_pool
from api.limits import BodyLimit
from api.live import Live
from api.metrics import ApiMetrics
from api.schema import schema
from api.view import GZIP_MIN_BYTES, ApiGraphQL
from projector.settings import Settings


def create_app(settings: Settings, config: ApiConfig | None = None,
               metrics: ApiMetrics | None = None) -> Starlette:
    """Build the ASGI app; the read pool and the live half open in the lifespan.

    ``settings.read_url`` (DATABASE_READ_URL, else DATABASE_URL) is where reads
    go; subscriptions LISTEN and read changes on ``settings.database_url``
    (notifications do not reach replicas); ``settings.api_auth`` is none or
    jwt. ``config`` (JWT keys, CORS origins, WebSocket limits) defaults to
    :meth:`ApiConfig.from_env`; ``metrics`` to a fresh registry, served on
    GET /metrics. ``app.state.live`` is the live half while the app runs.
    """
    config = config if config is not None else ApiConfig.from_env()
    metrics = metrics if metrics is not None else ApiMetrics()
    authenticator = Authenticator(settings.api_auth, config)  # ConfigError now, not at the first request
    graphql = ApiGraphQL(schema, authenticator=authenticator, limits=config.sockets, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await create_read_pool(settings.read_url or settings.require_database())
        live = Live(settings.database_url or settings.require_database(), pool, config.sockets, metrics)
        try:
            await live.start()
        except BaseException:
            await pool.close()
            raise
        app.state.pool = pool
        app.state.live = live
        graphql.attach(pool, live)
        try:
            yield
        finally:
            # Shutdown, in order: no new operations; end the subscriptions and
            # the feed; close the read pool.
            graphql.attach(None)
            await live.stop()
            await pool.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            async with request.app.state.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Gzip (responses over GZIP_MIN_BYTES) per route: /graphql does its own
    # (api.view); /healthz and /readyz answer a few bytes.
    middleware = []
    if config.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"], max_age=600))
    gated = AuthGate(graphql, authenticator)
    app = Starlette(
        routes=[
            Route("/graphql", BodyLimit(gated), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", gated),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", GZipMiddleware(request_response(metrics_page), minimum_size=GZIP_MIN_BYTES),
                  methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app
