"""API-only settings read from the environment: JWT keys, audience, issuer, CORS origins;
and the WebSocket limits (fixed defaults, overridable in code).

These belong in ``projector.settings.Settings``; until they move there they are
parsed here in the same style: frozen, validated on construction, and a
malformed value names its variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from projector.errors import ConfigError

# RFC 7518 3.2: an HS256 key must have at least as many bits as the hash output.
MIN_HS256_SECRET_BYTES = 32


def _parse_secret(raw: str) -> str:
    if len(raw.encode()) < MIN_HS256_SECRET_BYTES:
        raise ValueError(f"shorter than {MIN_HS256_SECRET_BYTES} bytes")
    return raw


def _parse_public_key(raw: str) -> str:
    # Accept "\n" escapes: PEM in a one-line environment variable is common.
    pem = raw.replace("\\n", "\n").strip()
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError("not a PEM public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key (RS256 needs one)")
    return pem


def _parse_origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    bad = [o for o in origins if o != "*" and not o.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"not an origin: {', '.join(bad)}")
    return origins


# name -> (environment variable, parser, what it expects)
_ENV: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "jwt_secret": ("API_JWT_SECRET", _parse_secret,
                   f"an HS256 secret of at least {MIN_HS256_SECRET_BYTES} bytes"),
    "jwt_public_key": ("API_JWT_PUBLIC_KEY", _parse_public_key, "an RSA public key in PEM"),
    "jwt_audience": ("API_JWT_AUDIENCE", str.strip, "the expected `aud` claim"),
    "jwt_issuer": ("API_JWT_ISSUER", str.strip, "the expected `iss` claim"),
    "cors_origins": ("API_CORS_ORIGINS", _parse_origins,
                     "a comma-separated list of origins like https://app.example.com"),
}


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """What one WebSocket connection may hold, and how long the server waits for it.

    ``init_timeout_s``: connection_init must arrive within this (default 10 s;
    else close 4408). ``max_subscriptions``: operations in flight per
    connection (default 50; the 51st gets an error). ``keepalive_s``: the
    server's protocol-level ping (graphql-transport-ws) or ``ka``
    (graphql-ws) interval (default 15 s). ``stall_timeout_s``: a client that
    accepts no frame for this long is dropped with close code 4008 (default
    30 s). ``buffer_rows``: rows one subscription may have waiting, newest state
    per row (default 1,000); a subscription that would need more ends with a
    SLOW_CONSUMER error.
    """

    init_timeout_s: float = 10.0
    max_subscriptions: int = 50
    keepalive_s: float = 15.0
    stall_timeout_s: float = 30.0
    buffer_rows: int = 1_000

    def __post_init__(self) -> None:
        for name in ("init_timeout_s", "keepalive_s", "stall_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"SocketLimits.{name} must be > 0 seconds (got {getattr(self, name)!r})")
        for name in ("max_subscriptions", "buffer_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SocketLimits.{name} must be >= 1 (got {getattr(self, name)!r})")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """JWT verification keys and CORS origins. Build it with :meth:`from_env`.

    ``jwt_secret`` verifies HS256 tokens, ``jwt_public_key`` (PEM) RS256 ones;
    with both set, a token's ``alg`` header picks the key. ``cors_origins``
    empty means no CORS headers at all. ``sockets``: the WebSocket limits.
    """

    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    cors_origins: tuple[str, ...] = ()
    sockets: SocketLimits = SocketLimits()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        """Read API_JWT_SECRET, API_JWT_PUBLIC_KEY, API_JWT_AUDIENCE, API_JWT_ISSUER, API_CORS_ORIGINS."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (var, parse, expected) in _ENV.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if name == "jwt_secret" else repr(raw[:60])
                raise ConfigError(f"{var}={shown} is not valid: expected {expected} ({exc}).") from exc
        return cls(**values)

    def require_jwt_keys(self) -> None:
        """Raise ConfigError unless a key to verify tokens with is configured."""
        if not self.jwt_secret and not self.jwt_public_key:
            raise ConfigError(
                "API_AUTH=jwt needs a key to verify tokens: set API_JWT_SECRET (HS256) "
                "or API_JWT_PUBLIC_KEY (RS256, PEM), or set API_AUTH=none on a loopback address."
            )
