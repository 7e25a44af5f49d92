"""A subscriber's buffer: the newest state of each row, in arrival order, bounded by rows.

The change feed puts without ever waiting; the subscription's task takes at
its own pace (as fast as its socket accepts frames). A row that changes again
before it was taken is replaced in place (coalesced: its intermediate state is
never sent, its place in line is kept). A put that would need more than
``capacity`` distinct rows fails instead: the subscriber is too slow for what
it asked for, and the caller ends the subscription rather than drop a row
silently.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Put(enum.Enum):
    ADDED = "added"
    COALESCED = "coalesced"  # replaced an older state of the same row
    FULL = "full"  # not stored: the mailbox holds `capacity` other rows
    CLOSED = "closed"  # not stored: the mailbox was closed


class Mailbox(Generic[V]):
    """At most ``capacity`` rows (>= 1), latest value per key. One consumer."""

    __slots__ = ("_error", "_items", "_waiter", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"Mailbox capacity must be >= 1 (got {capacity})")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._error is not None

    def put(self, key: Hashable, value: V) -> Put:
        """Store ``value`` as the newest state of ``key``; never waits."""
        if self._error is not None:
            return Put.CLOSED
        items = self._items
        if key in items:
            items[key] = value  # keeps its place in line
            return Put.COALESCED
        if len(items) >= self.capacity:
            return Put.FULL
        items[key] = value
        self._wake()
        return Put.ADDED

    def close(self, error: BaseException) -> int:
        """Make the consumer's next :meth:`get` raise ``error``; returns the rows discarded."""
        discarded = len(self._items)
        if self._error is None:
            self._error = error
            self._items.clear()
            self._wake()
        return discarded

    async def get(self) -> V:
        """The oldest row's newest state; waits for one. Raises the close error."""
        while True:
            if self._error is not None:
                raise self._error
            if self._items:
                return self._items.popitem(last=False)[1]
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
