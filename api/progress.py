"""projectionProgress: every projection's status, read once a second while anyone watches.

The engine updates its ``projections`` row about once a second (a heartbeat,
no notification), so this polls: one statement per interval for all
subscribers together, none while nobody watches. A status is pushed to a
subscriber when it differs from the previous poll's; a slow subscriber keeps
only the newest status per projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from api.fanout import PUSH_STARTED
from api.mailbox import Mailbox, Put
from api.metrics import ApiMetrics
from projector.db import is_transient

log = logging.getLogger("api.progress")

T = TypeVar("T")

POLL_INTERVAL_S = 1.0
# More projections than one deployment will ever have: the buffer bound.
MAX_PROJECTIONS = 256


class ProgressFeed(Generic[T]):
    """Polls ``load()`` every ``interval_s`` seconds while subscribed; ``key(status)`` names it."""

    def __init__(self, load: Callable[[], Awaitable[Sequence[T]]], key: Callable[[T], str], *,
                 interval_s: float = POLL_INTERVAL_S, metrics: ApiMetrics | None = None) -> None:
        self.load = load
        self.key = key
        self.interval_s = interval_s
        self.metrics = metrics
        self._subs: dict[Mailbox[tuple[T, float]], str | None] = {}
        self._last: dict[str, T] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @contextlib.asynccontextmanager
    async def subscribe(self, name: str | None) -> AsyncIterator[AsyncIterator[T]]:
        """The changed statuses (of projection ``name``, or all) for the ``async with`` block."""
        if self._closing:
            raise RuntimeError("ProgressFeed.subscribe() after stop()")
        mailbox: Mailbox[tuple[T, float]] = Mailbox(MAX_PROJECTIONS)
        self._subs[mailbox] = name
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll_routine(), name="progress-poll")
        gauge = self.metrics.subscriptions.labels("projectionProgress") if self.metrics else None
        if gauge is not None:
            gauge.inc()
        try:
            yield self._updates(mailbox)
        finally:
            del self._subs[mailbox]
            if gauge is not None:
                gauge.dec()

    async def _updates(self, mailbox: Mailbox[tuple[T, float]]) -> AsyncIterator[T]:
        while True:
            try:
                status, polled = await mailbox.get()
            except _Stopped:
                return
            PUSH_STARTED.set(polled)
            yield status

    async def _poll_routine(self) -> None:
        while self._subs:
            try:
                statuses = await self.load()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("projectionProgress: reading the statuses failed")
                else:
                    log.warning("projectionProgress: reading the statuses failed (%s); will retry", exc)
            else:
                polled = time.monotonic()
                for status in statuses:
                    name = self.key(status)
                    if self._last.get(name) == status:
                        continue
                    self._last[name] = status
                    for mailbox, wanted in list(self._subs.items()):
                        if wanted is None or wanted == name:
                            if mailbox.put(name, (status, polled)) is Put.COALESCED and self.metrics:
                                self.metrics.coalesced.inc()
            await asyncio.sleep(self.interval_s)
        # Nobody watches: the next subscriber's poller starts from scratch.
        self._last.clear()

    async def stop(self) -> None:
        """Shutdown: end every subscriber's stream, then stop polling."""
        self._closing = True
        for mailbox in list(self._subs):
            mailbox.close(_Stopped())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class _Stopped(Exception):
    """The feed is stopping: streams end without error."""
