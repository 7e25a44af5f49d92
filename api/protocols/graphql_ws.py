"""graphql-ws, the legacy subscriptions-transport-ws protocol, as strawberry implements it, plus:

- connection_init within ``init_timeout_s`` (else close 4408), as the newer
  protocol demands: an unauthenticated socket must not linger;
- one connection_init per connection (a second: close 4429), so a socket
  cannot switch viewers midway;
- a close (4403) when the connection's token expires; ``ka`` keep-alive
  messages every ``keepalive_s`` (strawberry's ``keep_alive``);
- a dropped slow client closed with 4008 (``api.protocols.socket``).

A ``start`` before the ack closes the socket with 4401 (strawberry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage

from api.context import Context
from api.protocols.socket import SocketAdapter, tracked

INIT_TIMEOUT_CLOSE = 4408
SECOND_INIT_CLOSE = 4429
TOKEN_EXPIRED_CLOSE = 4403


class GraphQLWsHandler(BaseGraphQLWSHandler[Context, None]):
    _init_received = False
    _watchdog: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        async with tracked(self.websocket, "graphql-ws"):
            self._initialised = asyncio.Event()
            self._watchdog = asyncio.create_task(self._watchdog_routine())
            try:
                await super().handle()
            finally:
                self._watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watchdog
            if isinstance(self.websocket, SocketAdapter):
                await self.websocket.finish()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self._init_received:
            await self.websocket.close(SECOND_INIT_CLOSE, "Too many initialisation requests")
            return
        self._init_received = True
        try:
            await super().handle_connection_init(message)
        finally:
            self._initialised.set()

    async def _watchdog_routine(self) -> None:
        """Close the socket if connection_init is late, or when its token expires."""
        limits = getattr(self.view, "limits", None)
        try:
            async with asyncio.timeout(limits.init_timeout_s if limits is not None else 10.0):
                await self._initialised.wait()
        except TimeoutError:
            await self.websocket.close(INIT_TIMEOUT_CLOSE, "Connection initialisation timeout")
            return
        while True:
            expires_at: Any = getattr(self.context, "expires_at", None)
            if expires_at is None:
                return
            if time.time() >= expires_at:
                await self.websocket.close(TOKEN_EXPIRED_CLOSE, "token expired: reconnect with a new one")
                return
            await asyncio.sleep(max(0.0, expires_at - time.time()))
