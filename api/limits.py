"""Bounds on what one request may cost: body size, document size, depth, aliases, fields.

The GraphQL limits are checked once per distinct query text: :func:`prepared`
parses a document (at most MAX_TOKENS tokens) and validates it (standard rules
plus the depth and alias limits) on first sight, and keeps the outcome in a
bounded LRU keyed by the text (``api.execution.ApiExtension`` uses it for the
parse and validate steps). Strawberry's ParserCache/ValidationCache would also
work, but ValidationCache keys on the parsed document, whose (frozen
dataclass) hash walks the whole tree on every request; a string's hash is
cached.
"""

from __future__ import annotations

import functools

import strawberry.extensions.max_aliases as max_aliases
import strawberry.extensions.query_depth_limiter as query_depth_limiter
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    Node,
    parse,
    specified_rules,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.schema.schema import validate_document

from api.auth import error_body

MAX_DEPTH = 10
MAX_TOKENS = 2_000
MAX_ALIASES = 15
# Field selections per document. Not one of the usual limits, but needed: the
# overlapping-fields validation rule is quadratic in the fields of a selection
# set, and 1,000 copies of one field (2,000 tokens) cost ~0.3 s of event loop.
# At 200 the worst case is ~20 ms; introspection from GraphiQL uses 72.
MAX_FIELDS = 200
# Distinct query texts kept parsed and validated (an attacker sending unique
# texts only evicts entries; memory stays bounded).
DOCUMENT_CACHE_SIZE = 512
# A 2,000-token query is far smaller; variables are small values.
MAX_BODY_BYTES = 1 << 20

# Built once: the cache is only hit if the same rule classes come back.
_RULES: tuple[type[ASTValidationRule], ...] = (
    *specified_rules,
    query_depth_limiter.create_validator(MAX_DEPTH, None),
    max_aliases.create_validator(MAX_ALIASES),
)


def _field_count(document: DocumentNode) -> int:
    count = 0
    stack: list[Node] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, FieldNode):
            count += 1
        for key in node.keys:
            value = getattr(node, key, None)
            if isinstance(value, Node):
                stack.append(value)
            elif isinstance(value, tuple):
                stack.extend(v for v in value if isinstance(v, Node))
    return count


@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def prepared(schema: GraphQLSchema, query: str) -> tuple[DocumentNode, tuple[GraphQLError, ...]]:
    """The parsed document and its validation errors (cached by text).

    Raises GraphQLError for a syntax error or more than MAX_TOKENS tokens (not
    cached; the token limit bounds the cost of trying again).
    """
    document = parse(query, max_tokens=MAX_TOKENS)
    if _field_count(document) > MAX_FIELDS:
        return document, (GraphQLError(
            f"the document selects more than {MAX_FIELDS} fields: split it into smaller queries"),)
    return document, tuple(validate_document(schema, document, _RULES))


class BodyLimit:
    """ASGI wrapper: 413 for request bodies over MAX_BODY_BYTES.

    A declared Content-Length is checked up front; a chunked body is read here
    up to the limit and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bounded = await self._bounded(scope, receive)
            if bounded is None:
                body = error_body(f"request body larger than {self.max_bytes} bytes", "PAYLOAD_TOO_LARGE")
                await send({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            receive = bounded
        await self.app(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive) -> Receive | None:
        length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
        if length is not None:
            return receive if length.isdigit() and int(length) <= self.max_bytes else None
        if scope["method"] != "POST":
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # disconnected: the app will see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return replay
