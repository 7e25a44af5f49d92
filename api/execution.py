"""How an operation runs: the Schema class and its one per-operation extension.

:class:`ApiExtension` carries three concerns, each kept in its own module:
the document cache and limits (``api.limits``), the freshness of the answer
(``api.freshness``) and error masking (``api.errors``). They share one
extension class because strawberry builds and walks every extension's hooks
for every operation (about 10 µs per extension class on the reference
machine, a few percent of a whole request on the hot path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import asyncpg
import strawberry
from graphql import DocumentNode, GraphQLError
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.extensions import SchemaExtension
from strawberry.schema._graphql_core import execution_context_class_kwargs
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api import fastpath
from api.errors import mask
from api.freshness import UNKNOWN, Snapshot, SnapshotCache
from api.limits import MAX_TOKENS, prepared
from api.metrics import operation_of

log = logging.getLogger("api.execution")


class ApiExtension(SchemaExtension):
    """Cached parse and validation with limits; ``extensions.freshness``; masked errors;
    the request metrics (``context.metrics``) of every operation the lean lane does not run."""

    _errors: tuple[GraphQLError, ...] | None = None
    _snapshot: Snapshot | None = None
    _stream_failed = False

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        # Strawberry parses the text itself when the cache raised (a syntax
        # error, reported as such): it must hit the same token limit.
        ctx.parse_options["max_tokens"] = MAX_TOKENS
        started = time.perf_counter()
        ok = False
        try:
            try:
                yield
            except (GeneratorExit, asyncio.CancelledError):
                # A stream closed by the client or the server is not a failure.
                ok = not self._stream_failed
                raise
            result: Any = ctx.result
            errors = getattr(result, "errors", None) or ctx.pre_execution_errors
            if errors and result is not None and getattr(result, "errors", None):
                result.errors = mask(result.errors)
            ok = not errors and not self._stream_failed
        finally:
            metrics = getattr(ctx.context, "metrics", None)
            if metrics is not None:
                kind = _operation_type(ctx)
                # A subscription's operation lasts as long as the subscription:
                # counted when it ends, not timed.
                elapsed = None if kind == "subscription" else time.perf_counter() - started
                metrics.request(ctx.operation_name, kind, ok, elapsed)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Each result of a stream (a subscription's events, a query over
        # WebSocket) is sent as it comes: mask it now, not when the operation ends.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = mask(errors)
            self._stream_failed = True
        if _operation_type(self.execution_context) == "subscription" and result.extensions:
            # The freshness snapshot was taken when the subscription started;
            # an event's row was read later.
            result.extensions.pop("freshness", None)
        yield

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query is not None:
            try:
                ctx.graphql_document, self._errors = prepared(ctx.schema._schema, ctx.query)
            except GraphQLError:
                pass  # strawberry's own parse reports it
        yield

    def on_validate(self) -> Iterator[None]:
        if self._errors is not None:
            # Set (even empty): strawberry then skips its own validation.
            self.execution_context.pre_execution_errors = list(self._errors)
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        # Before the reads: the checkpoints reported are then a lower bound.
        self._snapshot = await take_snapshot(self.execution_context.context)
        yield

    def get_results(self) -> dict[str, Any]:
        return {"freshness": freshness(self._snapshot, self.execution_context.context)}


def _operation_type(ctx: ExecutionContext) -> str:
    try:
        return ctx.operation_type.value
    except Exception:  # no document, or no such operation
        return "unknown"


async def take_snapshot(context: Any) -> Snapshot | None:
    """The context's current checkpoint snapshot; None if there is none to be had."""
    cache: SnapshotCache | None = getattr(context, "snapshots", None)
    if cache is None:
        return None
    try:
        return await cache.get()
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # Freshness unknown is better than no answer; the reads will fail on
        # their own if the database is gone.
        log.warning("cannot read checkpoints for the freshness extension", exc_info=True)
        return None


def freshness(snapshot: Snapshot | None, context: Any) -> dict[str, Any]:
    """``extensions.freshness`` for an answer read from the context's tables."""
    if snapshot is None:
        return UNKNOWN
    return snapshot.payload(getattr(getattr(context, "db", None), "tables", ()))


class ApiSchema(strawberry.Schema):
    """A Schema that leaves error logging to :func:`api.errors.mask`, runs
    plain documents with :mod:`api.fastpath`, and takes a lean lane for them.

    The lean lane: a cached, valid, plain query runs without strawberry's
    extension runner, which builds and walks hook context managers for five
    phases of every operation (~15% of the CPU of ``order(orderId)``). It does
    what :class:`ApiExtension` does, with the same functions, in the same
    order: snapshot, execute, mask, freshness. Every other operation takes
    strawberry's path with the extension.
    """

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        # Strawberry's default logs every error with a traceback, a client's
        # bad cursor included, and would log each internal error a second time
        # without its id.
        return None

    def _get_execute_function(self) -> Callable[..., Any]:
        # Private in strawberry: tests/test_api_fastpath.py pins it.
        return fastpath.execute

    def _lean(self, query: str | None, operation_name: str | None,
              allowed: Iterable[OperationType] | None) -> DocumentNode | None:
        """The document when the lean lane may run it."""
        if not isinstance(query, str) or self.extensions != (ApiExtension,) or self.directives:
            return None
        if allowed is not None and OperationType.QUERY not in allowed:
            return None
        try:
            document, errors = prepared(self._schema, query)
        except GraphQLError:
            return None
        if errors or fastpath.cached_plan(self._schema, document, operation_name) is None:
            return None
        return document

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        document = self._lean(query, operation_name, allowed_operation_types)
        if document is None:
            return await super().execute(query, variable_values, context_value, root_value,
                                         operation_name, allowed_operation_types, operation_extensions)
        started = time.perf_counter()
        snapshot = await take_snapshot(context_value)
        try:
            result = await fastpath.execute(
                self._schema, document, root_value=root_value, context_value=context_value,
                variable_values=variable_values, operation_name=operation_name,
                is_awaitable=optimized_is_awaitable, operation_extensions=operation_extensions,
                **execution_context_class_kwargs(self.execution_context_class))
        except Exception as exc:  # as strawberry does: an error result, never a raise
            result = GraphQLExecutionResult(data=None, errors=[GraphQLError(str(exc), original_error=exc)])
        errors = mask(result.errors) if result.errors else None
        metrics = getattr(context_value, "metrics", None)
        if metrics is not None:
            name, _ = operation_of(query, operation_name)
            metrics.request(name, "query", not errors, time.perf_counter() - started)
        return ExecutionResult(data=result.data, errors=errors,
                               extensions={"freshness": freshness(snapshot, context_value)})
