"""Who is asking: bearer JWTs turned into a Viewer, and the ASGI gate that demands one.

Over HTTP the token comes in the ``Authorization`` header. Over WebSocket
(browsers cannot set headers there) it comes in the connection_init payload,
``{"Authorization": "Bearer <jwt>"}`` or ``{"token": "<jwt>"}``
(:func:`connection_credentials`), checked by the same rules before the
server acknowledges; a handshake that does carry a header has it checked
then, and an invalid one is refused before the socket opens.

The Viewer only says who asks; what it may read is decided in the SQL: every
read of orders or customers takes the viewer and adds ``customer_id = $n``
for a customer (see ``api.sql``), so a customer's query cannot even fetch
another customer's row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.types import ASGIApp, Receive, Scope, Send

from api.config import ApiConfig
from api.errors import Unauthenticated

Role = Literal["admin", "customer"]

# Where the gate leaves the Viewer (None: none was checked) for ``api.context``.
VIEWER_SCOPE_KEY = "api.viewer"
# Where it leaves the token's expiry (epoch seconds) of a WebSocket handshake.
EXPIRES_SCOPE_KEY = "api.viewer_expires"


@dataclass(frozen=True, slots=True)
class Viewer:
    """The authenticated caller. ``customer_id`` is set exactly for role customer."""

    role: Role
    customer_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# With API_AUTH=none every caller is an admin (`projector serve` refuses a
# non-loopback address in that mode unless --insecure).
ADMIN = Viewer("admin")


class Authenticator:
    """Verifies ``Authorization: Bearer <jwt>`` headers.

    HS256 tokens are checked with ``config.jwt_secret``, RS256 ones with
    ``config.jwt_public_key``; a token signed with any other algorithm, or one
    whose key is not configured, is refused. ``exp`` is required; ``aud`` and
    ``iss`` are checked when configured.
    """

    def __init__(self, mode: str, config: ApiConfig) -> None:
        self.enabled = mode == "jwt"
        self._keys: dict[str, Any] = {}
        if self.enabled:
            config.require_jwt_keys()
            if config.jwt_secret:
                self._keys["HS256"] = config.jwt_secret
            if config.jwt_public_key:
                # Loaded once: parsing the PEM costs more than verifying a signature.
                self._keys["RS256"] = load_pem_public_key(config.jwt_public_key.encode())
        self._audience = config.jwt_audience
        self._issuer = config.jwt_issuer
        self._required = ["exp"] + (["aud"] if self._audience else []) + (["iss"] if self._issuer else [])

    def authenticate(self, authorization: str | None) -> Viewer:
        """The Viewer for an Authorization header value; raises Unauthenticated."""
        return self.authenticate_until(authorization)[0]

    def authenticate_until(self, authorization: str | None) -> tuple[Viewer, float | None]:
        """The Viewer and its token's expiry (epoch seconds; None without auth)."""
        if not self.enabled:
            return ADMIN, None
        if not authorization:
            raise Unauthenticated("missing credentials: send `Authorization: Bearer <token>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed Authorization header: expected `Bearer <token>`")
        return self.verify_until(token.strip())

    def verify(self, token: str) -> Viewer:
        """The Viewer a token's claims name; raises Unauthenticated."""
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[Viewer, float | None]:
        """The Viewer a token's claims name, and its ``exp``; raises Unauthenticated."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(alg) if isinstance(alg, str) else None
            if key is None or not isinstance(alg, str):
                raise Unauthenticated(
                    f"token algorithm {alg!r} is not accepted (accepted: {', '.join(sorted(self._keys))})")
            claims = jwt.decode(token, key, algorithms=[alg], audience=self._audience,
                                issuer=self._issuer, options={"require": self._required})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired: get a new one") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        exp = claims.get("exp")
        return _viewer(claims), float(exp) if isinstance(exp, int | float) else None


def connection_credentials(params: Mapping[str, Any] | None) -> str | None:
    """An Authorization value from a connection_init payload, or None if it has none.

    Accepted: ``{"Authorization": "Bearer <jwt>"}`` (any case),
    ``{"token": "<jwt>"}``, and either inside ``{"headers": {...}}``.
    """
    if not isinstance(params, Mapping):
        return None
    for source in (params, params.get("headers")):
        if not isinstance(source, Mapping):
            continue
        for key, value in source.items():
            if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
                return value
        token = source.get("token")
        if isinstance(token, str):
            return f"Bearer {token}"
    return None


def _viewer(claims: dict[str, Any]) -> Viewer:
    role = claims.get("role")
    if role == "admin":
        return ADMIN
    if role == "customer":
        customer_id = claims.get("customer_id")
        if not isinstance(customer_id, str) or not customer_id:
            raise Unauthenticated("invalid token: role customer needs a `customer_id` claim")
        return Viewer("customer", customer_id)
    raise Unauthenticated("invalid token: claim `role` must be admin or customer")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def error_body(message: str, code: str) -> bytes:
    """A JSON body in the GraphQL error shape, for answers given outside GraphQL."""
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


async def _reply(send: Send, status: int, message: str, code: str,
                 extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = error_body(message, code)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


class AuthGate:
    """ASGI wrapper for /graphql: no valid token, no operation.

    HTTP requests without valid credentials get 401 with a JSON body (GraphQL
    error shape). A WebSocket handshake with an invalid Authorization header
    is closed with 4401 before accepting; one without a header passes with no
    Viewer: its connection_init must authenticate (``api.view``). GET without
    a ``query`` parameter (the GraphiQL page) passes: it runs no operation.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        viewer: Viewer | None = ADMIN
        header = _header(scope, b"authorization") if self.authenticator.enabled else None
        if not self.authenticator.enabled:
            pass
        elif _is_ide_page(scope) or (scope["type"] == "websocket" and header is None):
            viewer = None  # fails closed in api.context should an operation run anyway
        else:
            try:
                viewer, expires = self.authenticator.authenticate_until(header)
                scope[EXPIRES_SCOPE_KEY] = expires
            except Unauthenticated as exc:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4401, "reason": str(exc)[:120]})
                else:
                    await _reply(send, 401, str(exc), exc.code, ((b"www-authenticate", b"Bearer"),))
                return
        scope[VIEWER_SCOPE_KEY] = viewer
        await self.app(scope, receive, send)


def _is_ide_page(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    # Decoded as Starlette decodes it, so that `%71uery=` counts as a query too.
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return "query" not in params
