"""What both WebSocket protocols share: text frames, slow clients, connection bookkeeping.

A client that stops reading fills the socket buffers; then every send waits.
Subscriptions keep only the newest state per row meanwhile (``api.mailbox``),
so memory stays bounded. A send that has waited ``stall_timeout_s`` (30 s by
default) means the client is gone or hopelessly behind: the connection is
dropped with close code 4008 (the close frame reaches the client only if it
reads again within CLOSE_GRACE_S; otherwise the TCP connection just ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived, WebSocketDisconnected

from api.fanout import PUSH_STARTED

if TYPE_CHECKING:
    from api.view import ApiGraphQL

log = logging.getLogger("api.protocols")

SLOW_CONSUMER_CLOSE = 4008
# How long a dropped slow client's close frame may wait for room in the socket.
CLOSE_GRACE_S = 5.0
# Message types that carry a subscription's result.
_RESULTS = ("next", "data")


class SocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's ASGI adapter with text frames (orjson), a send deadline and push timing."""

    def __init__(self, view: ApiGraphQL, request: WebSocket, response: WebSocket) -> None:
        super().__init__(view, request, response)  # type: ignore[arg-type]
        self.stall_timeout_s = view.limits.stall_timeout_s
        self.metrics = view.metrics
        self.dropped = asyncio.Event()
        # The connection's own task (it reads the client's messages); operations run in others.
        self._main = asyncio.current_task()

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        """As strawberry's, but ends as soon as the server drops the connection."""
        dropped = asyncio.ensure_future(self.dropped.wait())
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                receive = asyncio.ensure_future(self.ws.receive_text())
                await asyncio.wait((receive, dropped), return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                        await receive
                    return
                try:
                    text = receive.result()
                except KeyError as exc:
                    raise NonTextMessageReceived from exc
                except WebSocketDisconnect:
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
        finally:
            dropped.cancel()

    async def send_json(self, message: Mapping[str, object]) -> None:
        if self.dropped.is_set():
            await self._abandoned()
        text = orjson.dumps(message).decode()  # GraphQL over WebSocket wants text frames
        try:
            async with asyncio.timeout(self.stall_timeout_s):
                await self.ws.send_text(text)
        except TimeoutError:
            self._drop()
            await self._abandoned()
        except (WebSocketDisconnect, RuntimeError):
            # The client left (RuntimeError: Starlette's "after sending 'websocket.close'");
            # the connection's task sees it too and ends the operations.
            await self._abandoned()
        if message.get("type") in _RESULTS:
            started = PUSH_STARTED.get()
            if started is not None:
                PUSH_STARTED.set(None)
                if self.metrics:
                    self.metrics.push_seconds.observe(time.monotonic() - started)

    async def close(self, code: int, reason: str) -> None:
        # The peer may be gone already (a legacy client's connection_terminate
        # races its own close): nothing is left to tell it.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.ws.close(code=code, reason=reason)

    async def _abandoned(self) -> None:
        """A send on a closed or dropped connection: the connection's task is told,
        an operation's task waits to be cancelled by the handler's shutdown (raising
        would have strawberry log it as a failure of the operation)."""
        task = asyncio.current_task()
        # Already being cancelled (a handler sending its last words): fail at once.
        if task is self._main or task is None or task.cancelling():
            raise WebSocketDisconnected
        await asyncio.Event().wait()
        raise AssertionError("SocketAdapter._abandoned() woke up: only cancellation ends it")

    def _drop(self) -> None:
        if not self.dropped.is_set():
            log.warning("dropping a WebSocket client that accepted nothing for %.0f s", self.stall_timeout_s)
            if self.metrics:
                self.metrics.connections_dropped.labels("slow_consumer").inc()
            self.dropped.set()

    async def finish(self) -> None:
        """After the protocol handler returned: close a dropped connection with 4008."""
        if not self.dropped.is_set():
            return
        with contextlib.suppress(TimeoutError, RuntimeError, WebSocketDisconnect, OSError):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.ws.close(SLOW_CONSUMER_CLOSE, "slow consumer: stopped reading")


@contextlib.asynccontextmanager
async def tracked(adapter: Any, protocol: str) -> AsyncGenerator[None, None]:
    """Count the connection in the open-connections gauge while the block runs."""
    metrics = getattr(adapter, "metrics", None)
    gauge = metrics.connections.labels(protocol) if metrics else None
    if gauge is not None:
        gauge.inc()
    try:
        yield
    finally:
        if gauge is not None:
            gauge.dec()
