"""The /graphql endpoint: strawberry's ASGI view, with a lean path for JSON POSTs.

A JSON POST (nearly every request) is handled here directly: read the body,
``orjson.loads``, ``schema.execute``, ``orjson.dumps``, gzip if large and
accepted, send. Strawberry's own
request handling (request adapters, content negotiation, multipart, batching,
a sub-response per request) costs about as much CPU as executing a plain
query; everything it adds that we use is reproduced here, with the same
status codes and messages. GET (GraphiQL, queries in the URL), streaming
POSTs and WebSocket go to strawberry, with orjson for its JSON, through
Starlette's GZipMiddleware. (Not app-wide: on the lean path the middleware's
per-request responder cost more CPU than a whole Starlette route.)

WebSocket connections get the handlers of ``api.protocols`` and one
:class:`~api.context.SocketContext`, whose viewer is set by :meth:`ApiGraphQL.on_ws_connect`
from the connection_init payload (or the handshake's header): the same JWT
rules as HTTP, checked before the server acknowledges. Subscriptions are
served over WebSocket only.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import timedelta
from typing import Any, cast

import asyncpg
import orjson
from cross_web import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import process_result
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from api.auth import ADMIN, EXPIRES_SCOPE_KEY, VIEWER_SCOPE_KEY, Authenticator, Viewer, connection_credentials
from api.config import SocketLimits
from api.context import Context, SocketContext
from api.errors import Unauthenticated
from api.freshness import SnapshotCache
from api.live import Live
from api.metrics import ApiMetrics
from api.protocols.graphql_transport_ws import TransportWsHandler
from api.protocols.graphql_ws import GraphQLWsHandler
from api.protocols.socket import SocketAdapter

log = logging.getLogger("api.view")

DEFAULT_LIMITS = SocketLimits()

# A JSON POST gets one JSON answer: no subscriptions (those need WebSocket).
_POST_OPERATIONS = frozenset(OperationType.from_http("POST") - {OperationType.SUBSCRIPTION})
_JSON = b"application/json"
# Accept values that ask for a streamed answer: strawberry's transports.
_STREAMING = (b"multipart/mixed", b"text/event-stream")
# Responses below this many bytes are sent as they are: compressing them costs
# more CPU than it saves on the wire.
GZIP_MIN_BYTES = 1024
# zlib's default level (Starlette's middleware uses 9: a little smaller, much slower).
GZIP_LEVEL = 6
# Larger bodies are compressed in a thread, as Starlette does, not on the event loop.
GZIP_THREAD_MIN_BYTES = 128 * 1024


def _lean(scope: Scope) -> bytes | None:
    """For a POST with a JSON body that does not ask for a streamed answer, its
    Accept-Encoding (empty if none); None for any other request."""
    if scope["method"] != "POST":
        return None
    content_type = accept = encodings = b""
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value
        elif key == b"accept":
            accept = value
        elif key == b"accept-encoding":
            encodings = value
    if content_type.lower().startswith(_JSON) and not any(s in accept for s in _STREAMING):
        return encodings
    return None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


async def _send(send: Send, status: int, body: bytes, content_type: bytes, encodings: bytes = b"") -> None:
    """Send a whole response; gzipped (as GZipMiddleware would) when large and accepted."""
    headers = [(b"content-type", content_type)]
    if len(body) >= GZIP_MIN_BYTES:
        headers.append((b"vary", b"Accept-Encoding"))
        if b"gzip" in encodings:
            body = await asyncio.to_thread(_gzip, body) if len(body) >= GZIP_THREAD_MIN_BYTES else _gzip(body)
            headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with orjson, our Context and the lean JSON POST path.

    ``attach`` (from the app's lifespan) hands it the read pool and the live
    half (subscriptions); the Viewer comes from ``api.auth.AuthGate``, which
    wraps this view, or for WebSocket from connection_init. ``limits`` are
    the WebSocket limits; ``metrics`` None counts nothing.
    """

    websocket_adapter_class = SocketAdapter  # type: ignore[assignment]
    graphql_transport_ws_handler_class = TransportWsHandler
    graphql_ws_handler_class = GraphQLWsHandler
    pool: asyncpg.Pool | None = None
    snapshots: SnapshotCache | None = None
    live: Live | None = None

    def __init__(self, schema: BaseSchema, *, authenticator: Authenticator,
                 limits: SocketLimits = DEFAULT_LIMITS, metrics: ApiMetrics | None = None,
                 graphql_ide: Any = "graphiql") -> None:
        super().__init__(
            schema, graphql_ide=graphql_ide, keep_alive=True, keep_alive_interval=limits.keepalive_s,
            connection_init_wait_timeout=timedelta(seconds=limits.init_timeout_s),
            max_subscriptions_per_connection=limits.max_subscriptions)
        self.authenticator = authenticator
        self.limits = limits
        self.metrics = metrics
        # WebSocket passes through it untouched.
        self._gzipped = GZipMiddleware(self._strawberry, minimum_size=GZIP_MIN_BYTES)

    def attach(self, pool: asyncpg.Pool | None, live: Live | None = None) -> None:
        self.pool = pool
        self.snapshots = SnapshotCache(pool) if pool is not None else None
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            encodings = _lean(scope)
            if encodings is not None:
                await self._post(scope, receive, send, encodings)
                return
        await self._gzipped(scope, receive, send)

    async def _strawberry(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # The GraphiQL page before strawberry builds a context: the page
            # runs no operation, so it needs no Viewer.
            if scope["method"] == "GET" and self.graphql_ide:
                request = Request(scope, receive)
                if self.should_render_graphql_ide(self.request_adapter_class(request)):
                    response = await self.render_graphql_ide(request)
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def _context(self, request: Request | WebSocket) -> Context:
        assert self.pool is not None, "ApiGraphQL used before the lifespan attached a pool"
        if isinstance(request, WebSocket):
            return SocketContext(self.pool, self.snapshots, request, self.live, self.metrics)
        viewer = request.scope.get(VIEWER_SCOPE_KEY)
        if not isinstance(viewer, Viewer):
            # Only api.auth.AuthGate sets it; it leaves None for the GraphiQL
            # page. Fail closed should an operation come that way.
            raise HTTPException(401, "not authenticated")
        return Context(self.pool, viewer, self.snapshots, request, None, self.metrics)

    async def get_context(self, request: Request | WebSocket,
                          response: Response | WebSocket | None = None) -> Context:
        return self._context(request)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate connection_init: its payload's credentials, else the handshake's
        (already checked by AuthGate). Rejected: the socket is closed (4403)."""
        if not isinstance(context, SocketContext) or context.request is None:
            raise ConnectionRejectionError({"message": "not a WebSocket connection"})
        scope = context.request.scope
        try:
            if not self.authenticator.enabled:
                viewer, expires = ADMIN, None
            elif (credentials := connection_credentials(context.connection_params)) is not None:
                viewer, expires = self.authenticator.authenticate_until(credentials)
            elif isinstance(handshake := scope.get(VIEWER_SCOPE_KEY), Viewer):
                viewer, expires = handshake, scope.get(EXPIRES_SCOPE_KEY)
            else:
                raise Unauthenticated('missing credentials: send connection_init with '
                                      '{"Authorization": "Bearer <token>"} or {"token": "<token>"}')
        except Unauthenticated as exc:
            log.info("WebSocket connection_init refused: %s", exc)
            raise ConnectionRejectionError({"message": str(exc), "extensions": {"code": exc.code}}) from exc
        context.authenticate(viewer, expires if isinstance(expires, float) else None)
        return cast("UnsetType", UNSET)

    async def _post(self, scope: Scope, receive: Receive, send: Send, encodings: bytes) -> None:
        try:
            data = orjson.loads(await _body(receive))
        except orjson.JSONDecodeError:
            self._count_refused()
            await _send(send, 400, b"Unable to parse request body as JSON", b"text/plain; charset=utf-8")
            return
        problem = _request_problem(data)
        if problem is not None:
            self._count_refused()
            await _send(send, 400, problem.encode(), b"text/plain; charset=utf-8")
            return
        try:
            context = self._context(Request(scope, receive))
            result = await self.schema.execute(
                data.get("query"), variable_values=data.get("variables"), context_value=context,
                operation_name=data.get("operationName"), allowed_operation_types=_POST_OPERATIONS,
                operation_extensions=data.get("extensions"))
        except HTTPException as exc:
            await _send(send, exc.status_code, exc.reason.encode(), b"text/plain; charset=utf-8")
            return
        except MissingQueryError:
            await _send(send, 400, b"No GraphQL query found in the request", b"text/plain; charset=utf-8")
            return
        except CannotGetOperationTypeError as exc:
            await _send(send, 400, exc.as_http_error_reason().encode(), b"text/plain; charset=utf-8")
            return
        except InvalidOperationTypeError as exc:
            await _send(send, 400, exc.as_http_error_reason("POST").encode(), b"text/plain; charset=utf-8")
            return
        await _send(send, 200, orjson.dumps(process_result(result)), _JSON, encodings)

    def _count_refused(self) -> None:
        # Refused before any operation ran (the rest is counted where it runs: api.execution).
        if self.metrics is not None:
            self.metrics.request(None, "unknown", False, None)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def _request_problem(data: Any) -> str | None:
    """Strawberry's message for a malformed request body, or None."""
    if not isinstance(data, dict):
        return "Batching is not enabled: send one operation per request"
    if not isinstance(data.get("query"), str | None):
        return "The GraphQL operation's `query` must be a string or null, if provided."
    if not isinstance(data.get("variables"), dict | None):
        return "The GraphQL operation's `variables` must be an object or null, if provided."
    if not isinstance(data.get("extensions"), dict | None):
        return "The GraphQL operation's `extensions` must be an object or null, if provided."
    if not isinstance(data.get("operationName"), str | None):
        return "The GraphQL operation's `operationName` must be a string or null, if provided."
    return None
