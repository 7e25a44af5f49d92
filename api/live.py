"""The live half of one API process: subscribers, the change feed, the progress poller.

The app's lifespan starts one :class:`Live` after the read pool and stops it
before; resolvers reach it as ``info.context.live`` (WebSocket contexts only).
"""

from __future__ import annotations

import logging

import asyncpg

from api.config import SocketLimits
from api.fanout import Registry
from api.feed import ChangeFeed
from api.metrics import ApiMetrics
from api.progress import ProgressFeed
from api.sql import core
from api.sql.changes import FEED_TABLES
from api.types.projection_status import ProjectionStatus, status_of

log = logging.getLogger("api.live")


class Live:
    """Parameters: ``url`` the primary database (LISTEN and the feed's reads);
    ``pool`` the read pool (first messages, progress polls); ``limits`` the
    WebSocket limits (buffer rows); ``metrics`` optional."""

    def __init__(self, url: str, pool: asyncpg.Pool, limits: SocketLimits,
                 metrics: ApiMetrics | None = None) -> None:
        self.limits = limits
        self.metrics = metrics
        self.registry = Registry(FEED_TABLES, limits.buffer_rows, metrics)
        self.feed = ChangeFeed(url, self.registry, metrics=metrics)

        async def load() -> list[ProjectionStatus]:
            return [status_of(r) for r in await core.projection_status(pool)]

        self.progress: ProgressFeed[ProjectionStatus] = ProgressFeed(load, lambda s: s.name, metrics=metrics)

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        """Shutdown: 1. end every subscription (streams complete, no new ones);
        2. stop polling; 3. stop the feed and close its connections."""
        self.registry.close()
        await self.progress.stop()
        await self.feed.stop()
