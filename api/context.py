"""Per-request context handed to resolvers: the read pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL


@dataclass(slots=True)
class Context:
    pool: asyncpg.Pool
    request: Request | WebSocket


class ApiGraphQL(GraphQL):  # type: ignore[type-arg]
    pool: asyncpg.Pool | None = None

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None = None
    ) -> Any:
        assert self.pool is not None, "ApiGraphQL.get_context() called before the lifespan opened it"
        return Context(pool=self.pool, request=request)
