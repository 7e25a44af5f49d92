"""graphql-transport-ws (the graphql-ws library's protocol), as strawberry implements it, plus:

- a server ``ping`` every ``keepalive_s`` once acknowledged (idle proxies keep
  the connection; a dead peer is found by the WebSocket-level ping, see
  ``api.server``), and a close (4403) when the connection's token expires;
- a dropped slow client closed with 4008 (``api.protocols.socket``).

Strawberry already enforces the rest of the protocol: connection_init within
the timeout (else 4408), nothing before the ack (subscribe: 4401), one init
(4429), unique ids (4409), and the per-connection operation cap (an ``error``
message for the one too many).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage

from api.context import Context
from api.protocols.socket import SocketAdapter, tracked

TOKEN_EXPIRED_CLOSE = 4403


class TransportWsHandler(BaseGraphQLTransportWSHandler[Context, None]):
    keepalive_task: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        async with tracked(self.websocket, "graphql-transport-ws"):
            try:
                await super().handle()
            finally:
                if self.keepalive_task is not None:
                    self.keepalive_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.keepalive_task
            if isinstance(self.websocket, SocketAdapter):
                await self.websocket.finish()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.keepalive_task is None:
            self.keepalive_task = asyncio.create_task(self._keepalive_routine())

    async def _keepalive_routine(self) -> None:
        interval = getattr(self.view, "limits", None)
        period = interval.keepalive_s if interval is not None else 15.0
        while True:
            expires_at: Any = getattr(self.context, "expires_at", None)
            wait = period if expires_at is None else max(0.0, min(period, expires_at - time.time()))
            await asyncio.sleep(wait)
            if expires_at is not None and time.time() >= expires_at:
                await self.websocket.close(TOKEN_EXPIRED_CLOSE, "token expired: reconnect with a new one")
                return
            await self.send_message({"type": "ping"})
