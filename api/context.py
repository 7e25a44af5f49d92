"""Per-request context handed to resolvers.

Cheap to make: DataLoaders are created on first use, so the hot path (one
order by id) builds none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from api.auth import ADMIN, Viewer
from api.db import ReadDb, ReadPool
from api.freshness import SnapshotCache

K = TypeVar("K")
V = TypeVar("V")


class Context:
    """What a resolver may use: the request's ReadDb, the Viewer, its DataLoaders.

    ``snapshots`` feeds the freshness extension; ``request`` is None when the
    schema is executed directly (tests).
    """

    __slots__ = ("_loaders", "db", "request", "snapshots", "viewer")

    def __init__(self, pool: ReadPool, viewer: Viewer = ADMIN,
                 snapshots: SnapshotCache | None = None,
                 request: Request | WebSocket | None = None) -> None:
        self.db = ReadDb(pool)
        self.viewer = viewer
        self.snapshots = snapshots if snapshots is not None else SnapshotCache(pool)
        self.request = request
        self._loaders: dict[object, DataLoader[Any, Any]] = {}

    def loader(self, make: Callable[[Context], DataLoader[K, V]]) -> DataLoader[K, V]:
        """The request's DataLoader built by ``make`` (one per request and factory)."""
        found = self._loaders.get(make)
        if found is None:
            found = self._loaders[make] = make(self)
        return cast("DataLoader[K, V]", found)


# What resolvers annotate their `info` with.
ApiInfo = Info[Context, None]
