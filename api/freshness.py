"""How current an answer is: ``extensions.freshness`` in every response.

``extensions.freshness`` = {asOf, lagEvents, checkpoints{projection{topic{partition: next offset}}}},
added by ``api.execution`` (ApiExtension, or the lean lane) from the Snapshot
it takes before the request's reads.

The answer to a query reflects at least the events below each checkpoint
(``next_offset``) of the projections whose tables it read. The checkpoints are
read once per SNAPSHOT_TTL_S (100 ms) for all requests together, and *before*
the request's own reads, so the reported offsets are a lower bound of what the
answer contains, never an overstatement.

``lagEvents`` is how many events of those projections' partitions lie between
their checkpoints and the log ends the engine last published (``partition_status``,
refreshed every second or so by the instance owning each partition): an estimate
that can trail a burst of new events by that second, never a count of events not
in the log. It is null while any of those partitions has no published end (no
engine has owned it yet) and when the answer read no projection's table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from api.db import ReadPool
from api.sql import core

SNAPSHOT_TTL_S = 0.1


class Snapshot:
    """Projections and checkpoints as read at ``as_of`` (database time). Immutable."""

    __slots__ = ("_payloads", "as_of", "checkpoints", "projection_of", "projections", "taken")

    def __init__(self, as_of: datetime, projections: list[dict[str, Any]],
                 checkpoints: list[list[Any]], taken: float) -> None:
        self.as_of = as_of
        self.taken = taken
        self.projections = projections
        # [projection, topic, partition, next_offset, end_offset or None] rows.
        self.checkpoints = checkpoints
        self.projection_of: Mapping[str, str] = {
            logical: p["name"] for p in projections for logical in (p.get("tables") or {})}
        self._payloads: dict[frozenset[str], dict[str, Any]] = {}

    @classmethod
    def from_row(cls, row: Mapping[str, Any], taken: float) -> Snapshot:
        return cls(row["as_of"], row["projections"], row["checkpoints"], taken)

    def payload(self, tables: Iterable[str]) -> dict[str, Any]:
        """The freshness of an answer read from ``tables`` (logical names)."""
        key = frozenset(tables)
        found = self._payloads.get(key)
        if found is None:
            names = {self.projection_of[t] for t in key if t in self.projection_of}
            offsets: dict[str, dict[str, dict[str, int]]] = {}
            lag: int | None = 0
            for projection, topic, partition, next_offset, end_offset in self.checkpoints:
                if projection in names:
                    offsets.setdefault(projection, {}).setdefault(topic, {})[str(partition)] = next_offset
                    if end_offset is None:
                        lag = None
                    elif lag is not None:
                        # A checkpoint of -1 (the log start) has applied nothing yet.
                        lag += max(0, end_offset - max(0, next_offset))
            # Memoised: every request between two refreshes that read the same
            # tables gets the same (read-only) dict.
            found = self._payloads[key] = {
                "asOf": self.as_of.isoformat(), "lagEvents": lag if offsets else None,
                "checkpoints": offsets}
        return found


# The freshness of an answer given without a snapshot (the database was unreachable).
UNKNOWN: dict[str, Any] = {"asOf": None, "lagEvents": None, "checkpoints": {}}


class SnapshotCache:
    """The latest Snapshot, refreshed at most every ``ttl_s`` seconds by one query.

    Concurrent requests that find it stale share one refresh.
    """

    def __init__(self, pool: ReadPool, ttl_s: float = SNAPSHOT_TTL_S) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self._snapshot: Snapshot | None = None
        self._refresh: asyncio.Future[Snapshot] | None = None

    async def get(self) -> Snapshot:
        snapshot = self._snapshot
        now = time.monotonic()
        if snapshot is not None and now - snapshot.taken < self.ttl_s:
            return snapshot
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._load(now))
        # shield: one request giving up must not cancel the others' refresh.
        return await asyncio.shield(self._refresh)

    async def _load(self, now: float) -> Snapshot:
        try:
            self._snapshot = Snapshot.from_row(await core.snapshot(self.pool), now)
            return self._snapshot
        finally:
            self._refresh = None


