"""Per-request context handed to resolvers.

Cheap to make: DataLoaders are created on first use, so the hot path (one
order by id) builds none. A WebSocket connection has one
:class:`SocketContext` for all its operations; its viewer is known only once
``connection_init`` is authenticated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from api.auth import ADMIN, Viewer
from api.db import ReadDb, ReadPool
from api.errors import ApiError, Unauthenticated
from api.freshness import SnapshotCache

if TYPE_CHECKING:
    from api.live import Live
    from api.metrics import ApiMetrics

K = TypeVar("K")
V = TypeVar("V")


class Context:
    """What a resolver may use: the request's ReadDb, the Viewer, its DataLoaders.

    ``snapshots`` feeds the freshness extension; ``request`` is None when the
    schema is executed directly (tests); ``live`` (subscriptions) is set on
    WebSocket connections only; ``metrics`` None: not counted.
    """

    __slots__ = ("_loaders", "db", "live", "metrics", "request", "snapshots", "viewer")

    def __init__(self, pool: ReadPool, viewer: Viewer = ADMIN,
                 snapshots: SnapshotCache | None = None,
                 request: Request | WebSocket | None = None,
                 live: Live | None = None, metrics: ApiMetrics | None = None) -> None:
        self.db = ReadDb(pool)
        self.viewer = viewer
        self.snapshots = snapshots if snapshots is not None else SnapshotCache(pool)
        self.request = request
        self.live = live
        self.metrics = metrics
        self._loaders: dict[object, DataLoader[Any, Any]] = {}

    def loader(self, make: Callable[[Context], DataLoader[K, V]]) -> DataLoader[K, V]:
        """The request's DataLoader built by ``make`` (one per request and factory)."""
        found = self._loaders.get(make)
        if found is None:
            found = self._loaders[make] = make(self)
        return cast("DataLoader[K, V]", found)

    def require_live(self) -> Live:
        """The subscription machinery; ApiError outside a WebSocket connection."""
        if self.live is None:
            raise ApiError("subscriptions are served over WebSocket only (graphql-transport-ws or "
                           "graphql-ws on /graphql)")
        return self.live


class SocketContext(Context):
    """A WebSocket connection's context: no viewer until ``authenticate``.

    Reading ``viewer`` before raises Unauthenticated, so an operation that
    somehow ran before ``connection_init`` could read nothing.
    """

    __slots__ = ("_viewer", "connection_params", "expires_at")

    def __init__(self, pool: ReadPool, snapshots: SnapshotCache | None, request: WebSocket,
                 live: Live | None, metrics: ApiMetrics | None) -> None:
        self._viewer: Viewer | None = None
        super().__init__(pool, ADMIN, snapshots, request, live, metrics)
        self._viewer = None  # Context.__init__ went through the setter
        # Set by strawberry's protocol handlers from the connection_init payload.
        self.connection_params: dict[str, Any] | None = None
        # When the viewer's token expires (epoch seconds): the socket is closed then.
        self.expires_at: float | None = None

    @property
    def viewer(self) -> Viewer:
        if self._viewer is None:
            raise Unauthenticated("not authenticated: send connection_init with credentials first")
        return self._viewer

    @viewer.setter
    def viewer(self, value: Viewer) -> None:
        self._viewer = value

    def authenticate(self, viewer: Viewer, expires_at: float | None = None) -> None:
        self._viewer = viewer
        self.expires_at = expires_at


# What resolvers annotate their `info` with.
ApiInfo = Info[Context, None]
