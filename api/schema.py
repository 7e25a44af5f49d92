"""Assembles the GraphQL schema from the types under api/types/."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from api.context import Context


@strawberry.type
class ProjectionStatus:
    name: str
    version: int
    state: str


@strawberry.type
class Query:
    @strawberry.field(description="The projections and their state.")
    async def projections(self, info: Info[Context, None]) -> list[ProjectionStatus]:
        rows = await info.context.pool.fetch("SELECT name, version, state FROM projections ORDER BY name")
        return [ProjectionStatus(name=r["name"], version=r["version"], state=r["state"]) for r in rows]


schema = strawberry.Schema(query=Query)
