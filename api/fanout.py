"""Who watches which rows, and handing each changed row to the subscribers it matches.

The change feed reads a changed row once; :meth:`Registry.dispatch` finds its
subscribers through in-memory indexes (by row key, by owner, or "all rows")
and puts the row into each one's :class:`~api.mailbox.Mailbox`. The work per
change grows with the subscribers it matches, never with all of them, and the
database is not involved.

A subscriber's filters are checked here, customer scoping included: a
customer's subscription always carries ``owner = its customer_id``, and a row
whose owner column differs (or is still unknown) is never offered to it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.errors import ApiError
from api.mailbox import Mailbox, Put
from api.metrics import ApiMetrics
from api.sql.changes import FeedTable

# Orders whose last seen status is remembered (to tell a status change from
# another change of the row); past this, the least recently changed are forgotten
# and their next change counts as a status change.
STATUS_MEMORY = 100_000

# When the change the current task is about to send was noticed (monotonic
# seconds), for the push-latency histogram; set by a subscription's stream,
# read by the socket adapter in the same task.
PUSH_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar("push_started", default=None)


class SlowConsumer(ApiError):
    """A subscriber fell further behind than its buffer allows."""

    code = "SLOW_CONSUMER"


class ResyncRequired(ApiError):
    """The watched table was rebuilt and swapped: the subscriber must re-query."""

    code = "RESYNC_REQUIRED"


class _Closed(Exception):
    """The registry is shutting down: streams end without error."""


@dataclass(frozen=True, slots=True)
class Change:
    """A row's state as the feed read it.

    ``arrived``: when the notification that led to the read came (monotonic
    seconds). ``status_changed``: the row's status differs from the one last
    seen (always true for a row not seen before). ``resync``: re-read after a
    rebuild swapped the table (sequences start a new history).
    """

    table: str
    key: Hashable
    row: Mapping[str, Any]
    seq: int
    arrived: float
    status_changed: bool = True
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Watch:
    """What one subscription watches in ``table``: one row (``key``), an owner's rows,
    or all rows; optionally only some statuses, or only status changes."""

    table: str
    field: str
    key: Hashable | None = None
    owner: str | None = None
    statuses: frozenset[str] | None = None
    status_changes_only: bool = False


class Subscriber:
    """One subscription's end of the fan-out: its watch, its mailbox."""

    __slots__ = ("_metrics", "_owner_column", "_status_column", "floor", "mailbox", "watch")

    def __init__(self, watch: Watch, spec: FeedTable, capacity: int, metrics: ApiMetrics | None) -> None:
        self.watch = watch
        self.mailbox: Mailbox[Change] = Mailbox(capacity)
        # The sequence of the state sent first (read on subscribing): the feed's
        # older or equal states of that row are not sent after it.
        self.floor: int | None = None
        self._owner_column = spec.owner
        self._status_column = spec.status
        self._metrics = metrics

    def accepts(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes the watch's owner and status filters."""
        watch = self.watch
        if watch.owner is not None and row[self._owner_column or ""] != watch.owner:
            return False
        return watch.statuses is None or row[self._status_column or ""] in watch.statuses

    def offer(self, change: Change) -> None:
        if not self.accepts(change.row):
            return
        if self.watch.status_changes_only and not change.status_changed:
            return
        if self.floor is not None:
            if not change.resync and change.seq <= self.floor:
                return
            self.floor = None
        outcome = self.mailbox.put(change.key, change)
        if outcome is Put.COALESCED:
            if self._metrics:
                self._metrics.coalesced.inc()
        elif outcome is Put.FULL:
            self.fail(SlowConsumer(
                f"this subscription fell more than {self.mailbox.capacity} rows behind and was ended: "
                "query the current state, then subscribe again (or watch fewer rows)"), "slow_consumer")

    def fail(self, error: BaseException, reason: str) -> None:
        """End the subscription: its stream raises ``error`` (sent to the client)."""
        if self.mailbox.closed:
            return
        discarded = self.mailbox.close(error)
        if self._metrics:
            self._metrics.dropped.labels(reason).inc(discarded + (reason == "slow_consumer"))

    async def changes(self) -> AsyncIterator[Change]:
        """The changes offered, oldest row first; ends quietly when the registry closes."""
        get = self.mailbox.get
        while True:
            try:
                change = await get()
            except _Closed:
                return
            PUSH_STARTED.set(change.arrived)
            yield change


class _Index:
    __slots__ = ("by_key", "by_owner", "wide")

    def __init__(self) -> None:
        self.by_key: dict[Hashable, set[Subscriber]] = {}
        self.by_owner: dict[str, set[Subscriber]] = {}
        self.wide: set[Subscriber] = set()

    def bucket(self, watch: Watch) -> set[Subscriber]:
        if watch.key is not None:
            return self.by_key.setdefault(watch.key, set())
        if watch.owner is not None:
            return self.by_owner.setdefault(watch.owner, set())
        return self.wide

    def discard(self, sub: Subscriber) -> None:
        watch = sub.watch
        found = self.bucket(watch)
        found.discard(sub)
        if not found and watch.key is not None:
            del self.by_key[watch.key]
        elif not found and watch.owner is not None:
            del self.by_owner[watch.owner]

    def __len__(self) -> int:
        return (len(self.wide) + sum(len(s) for s in self.by_key.values())
                + sum(len(s) for s in self.by_owner.values()))


class _StatusMemory:
    """The last status seen per key, least recently changed forgotten first."""

    __slots__ = ("_seen", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, object] = OrderedDict()

    def changed(self, key: Hashable, status: object) -> bool:
        seen = self._seen
        before = seen.pop(key, _UNSEEN)
        seen[key] = status
        if len(seen) > self.capacity:
            seen.popitem(last=False)
        return before != status

    def clear(self) -> None:
        self._seen.clear()


_UNSEEN = object()


class Registry:
    """The subscribers of every feed table, indexed for dispatch.

    Parameters: ``tables`` the watchable tables by name; ``buffer_rows`` each
    subscriber's mailbox capacity (rows); ``metrics`` optional.
    """

    def __init__(self, tables: Mapping[str, FeedTable], buffer_rows: int,
                 metrics: ApiMetrics | None = None) -> None:
        self.tables = dict(tables)
        self.buffer_rows = buffer_rows
        self.metrics = metrics
        self._index = {name: _Index() for name in self.tables}
        self._memory = {name: _StatusMemory(STATUS_MEMORY) for name, t in self.tables.items() if t.status}
        self._all: set[Subscriber] = set()
        self._closing = False
        if metrics is not None:
            metrics.watch_buffers(lambda: [len(s.mailbox) for s in list(self._all)])

    def __len__(self) -> int:
        return len(self._all)

    @contextlib.contextmanager
    def subscribe(self, watch: Watch) -> Iterator[Subscriber]:
        """Register a subscriber for the duration of the ``with`` block."""
        if self._closing:
            raise ApiError("the server is shutting down: subscribe again in a moment")
        spec = self.tables[watch.table]
        sub = Subscriber(watch, spec, self.buffer_rows, self.metrics)
        index = self._index[watch.table]
        index.bucket(watch).add(sub)
        self._all.add(sub)
        gauge = self.metrics.subscriptions.labels(watch.field) if self.metrics else None
        if gauge is not None:
            gauge.inc()
        try:
            yield sub
        finally:
            index.discard(sub)
            self._all.discard(sub)
            if gauge is not None:
                gauge.dec()
            if self.metrics and len(sub.mailbox):
                # The client left (or was dropped) with rows still waiting.
                self.metrics.dropped.labels("closed").inc(len(sub.mailbox))

    def interested(self, table: str) -> bool:
        """Whether anyone watches ``table`` now (else the feed only moves its cursor)."""
        index = self._index[table]
        # Not len(index): that walks every watched key, and the feed asks per page.
        return bool(index.wide or index.by_key or index.by_owner)

    def watched(self, table: str) -> tuple[list[Hashable], list[str], list[Subscriber]]:
        """The keys and owners watched in ``table``, and the subscribers watching all of it."""
        index = self._index[table]
        return list(index.by_key), list(index.by_owner), list(index.wide)

    def dispatch(self, changes: Sequence[Change]) -> None:
        """Offer each change to the subscribers it matches (filters are theirs to check)."""
        for change in changes:
            index = self._index[change.table]
            memory = self._memory.get(change.table)
            if memory is not None:
                status = change.row[self.tables[change.table].status or ""]
                if not memory.changed(change.key, status) and change.status_changed:
                    change = Change(change.table, change.key, change.row, change.seq, change.arrived,
                                    False, change.resync)
            # offer() never changes the indexes (a failed subscriber leaves them
            # when its stream ends), so the sets are iterated as they are.
            found = index.by_key.get(change.key)
            if found:
                for sub in found:
                    sub.offer(change)
            if index.by_owner:
                owner_column = self.tables[change.table].owner
                found = index.by_owner.get(change.row[owner_column]) if owner_column else None
                if found:
                    for sub in found:
                        sub.offer(change)
            for sub in index.wide:
                sub.offer(change)

    def swapped(self, table: str) -> None:
        """``table`` was replaced: forget the statuses seen and the first-message floors."""
        memory = self._memory.get(table)
        if memory is not None:
            memory.clear()
        index = self._index[table]
        for bucket in (*index.by_key.values(), *index.by_owner.values(), index.wide):
            for sub in bucket:
                sub.floor = None

    def close(self) -> None:
        """Shutdown: end every subscription's stream (without an error) and take no new ones."""
        self._closing = True
        for sub in list(self._all):
            sub.mailbox.close(_Closed())
