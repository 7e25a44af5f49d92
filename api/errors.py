"""Errors the client sees: expected ones keep their message, the rest are masked.

Raise :class:`ApiError` (or a subclass) for anything the client caused and can
fix: a bad cursor, a page too large, a missing role. Any other exception is a
bug or an outage; :func:`mask` (run on every result by
``api.execution.ApiExtension``) replaces it with "Internal server error" and an
id, and logs the traceback under that id, so that an operator can find it
without the client learning anything about the internals.
"""

from __future__ import annotations

import logging
import secrets

from graphql import GraphQLError
from strawberry.schema.exceptions import InvalidOperationTypeError

from projector.errors import ProjectorError

log = logging.getLogger("api.errors")

INTERNAL_MESSAGE = "Internal server error"


class ApiError(ProjectorError):
    """A request the client can fix; the message is shown to it as is."""

    code = "BAD_USER_INPUT"


class Forbidden(ApiError):
    """The viewer is authenticated but its role may not read this."""

    code = "FORBIDDEN"


class Unauthenticated(ApiError):
    """No valid credentials: missing, malformed or expired token."""

    code = "UNAUTHENTICATED"


class QueryTimeout(ApiError):
    """A read statement ran into the read pool's statement timeout."""

    code = "TIMEOUT"


def _is_expected(error: GraphQLError) -> bool:
    original = error.original_error
    # No original error: graphql-core's own parse, validation and coercion
    # errors, including the depth, token and alias limits.
    return original is None or isinstance(original, ApiError | GraphQLError)


def mask(errors: list[GraphQLError]) -> list[GraphQLError]:
    """The errors as the client may see them; logs each masked one with its id."""
    out: list[GraphQLError] = []
    for error in errors:
        original = error.original_error
        if isinstance(original, ApiError):
            error.extensions = {**(error.extensions or {}), "code": original.code}
            out.append(error)
        elif isinstance(original, InvalidOperationTypeError):
            # Only the legacy graphql-ws protocol gets here (it runs subscriptions only).
            out.append(GraphQLError(
                f"{original.as_http_error_reason('graphql-ws')}: send them over HTTP or "
                "graphql-transport-ws", extensions={"code": ApiError.code}))
        elif _is_expected(error):
            out.append(error)
        else:
            error_id = secrets.token_hex(8)
            log.error("internal error %s at %s: %s", error_id, ".".join(map(str, error.path or ())),
                      original, exc_info=original)
            out.append(GraphQLError(
                INTERNAL_MESSAGE, nodes=error.nodes, source=error.source, positions=error.positions,
                path=error.path, extensions={"code": "INTERNAL_SERVER_ERROR", "errorId": error_id}))
    return out
