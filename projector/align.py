"""Batches cut across partitions in record-timestamp order.

The events of one order are published within moments of each other, but on
different topics. A consumer that drains one partition's fetch after another
puts a single event of thousands of orders in a batch, so every event costs a
row write. Taking the oldest records of all partitions instead (as Kafka
Streams does) puts most events of an order in the same batch, and several
events of one order become one row write.

:class:`Aligner` holds what was fetched but not yet applied, per partition, in
offset order; :meth:`Aligner.take` returns up to ``n`` records, the oldest
timestamps first, each partition's records a prefix of its buffer (offset
order is kept, so checkpoints stay contiguous). Bounded: a partition whose
buffer reaches :attr:`Aligner.cap` is not drained from the consumer until it
shrinks (:meth:`Aligner.full`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from projector.checkpoints import TP

# Catching up, how long a batch may wait for every partition to have records buffered.
MAX_WAIT_S = 1.0

Entry = tuple[Any, ...]
"""``(timestamp in ms, record, ...)``: what the aligner holds per fetched record."""


class Aligner:
    """Per-partition buffers of fetched records, cut into timestamp-ordered batches.

    ``cap``: records held per partition before it is considered full.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._buffers: dict[TP, deque[Entry]] = {}
        # Per partition, the newest timestamp fetched: a watermark, since
        # timestamps within a partition may go backwards (producers' clocks).
        self._newest: dict[TP, Any] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, tp: object) -> bool:
        return tp in self._buffers

    def add(self, fetched: Mapping[TP, Sequence[Entry]]) -> None:
        """Append entries ``(timestamp, record, ...)`` fetched for each partition, in offset order."""
        for tp, records in fetched.items():
            if not records:
                continue
            buffer = self._buffers.get(tp)
            if buffer is None:
                buffer = self._buffers[tp] = deque()
            buffer.extend(records)
            self._size += len(records)
            newest = max(r[0] for r in records)
            if tp not in self._newest or newest > self._newest[tp]:
                self._newest[tp] = newest

    def full(self) -> set[TP]:
        """The partitions holding at least :attr:`cap` records: drain no more of them."""
        return {tp for tp, b in self._buffers.items() if len(b) >= self.cap}

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop the records of ``tps`` (revoked, refused, or sought elsewhere)."""
        for tp in tps:
            buffer = self._buffers.pop(tp, None)
            self._newest.pop(tp, None)
            if buffer is not None:
                self._size -= len(buffer)

    def horizon(self, unfetched: Iterable[TP]) -> Any:
        """The newest timestamp a batch may take: the oldest of the newest timestamps
        fetched for partitions with more records still to fetch (``unfetched``) and
        records buffered.

        A record past it may be preceded, in time, by a record not fetched yet.
        Every record buffered for the partition that sets it is at or below it, so
        that partition can always be drained. None: no limit.
        """
        ends = [self._newest[tp] for tp in unfetched if tp in self._buffers]
        return min(ends) if ends else None

    def ready(self, unfetched: Collection[TP], behind: float, batch: int, waited_s: float,
              idle: bool = False) -> tuple[bool, Any]:
        """Whether to cut a batch now, and the horizon it stops at (None: none).

        ``unfetched``: the partitions with records still to fetch, ``behind`` records
        in all; ``waited_s`` since the last batch; ``idle``: the last fetch found
        nothing. Catching up (``behind`` at least a ``batch``), a batch waits until
        every partition in ``unfetched`` has records buffered (else its oldest ones
        are unknown) and stops at their :meth:`horizon`; after :data:`MAX_WAIT_S` it
        goes anyway (a partition whose fetches bring nothing). In the live tail it
        takes what is here: alignment gains little in a small batch, and a partition
        whose reported end runs ahead of what its fetch returned would hold every
        batch back until its next fetch.
        """
        if not self._size:
            return False, None
        if behind < batch:
            return True, None
        if idle or waited_s > MAX_WAIT_S or all(tp in self._buffers for tp in unfetched):
            return True, self.horizon(unfetched)
        return False, None

    def holds(self, n: int, horizon: Any = None) -> bool:
        """Whether :meth:`take` of ``n`` records up to ``horizon`` would take ``n``."""
        if horizon is None or self._size < n:
            return self._size >= n
        count = 0
        for buffer in self._buffers.values():
            for entry in buffer:
                if entry[0] > horizon:
                    break
                count += 1
                if count >= n:
                    return True
        return False

    def take(self, n: int, horizon: Any = None) -> dict[TP, list[Entry]]:
        """Up to ``n`` records, oldest timestamp first; per partition, a prefix in offset order.

        ``horizon``: take no record newer than this (see :meth:`horizon`).
        A partition whose timestamps go backwards keeps its offset order: only
        the heads of the buffers are compared.
        """
        out: dict[TP, list[Entry]] = {}
        if n <= 0 or not self._size:
            return out
        heads = [(b[0][0], i, tp) for i, (tp, b) in enumerate(self._buffers.items())]
        heapq.heapify(heads)
        buffers = self._buffers
        taken = 0
        while heads and taken < n:
            ts, i, tp = heads[0]
            if horizon is not None and ts > horizon and taken:
                break
            buffer = buffers[tp]
            got = out.get(tp)
            if got is None:
                got = out[tp] = []
            got.append(buffer.popleft())
            taken += 1
            if buffer:
                heapq.heapreplace(heads, (buffer[0][0], i, tp))
            else:
                heapq.heappop(heads)
                del buffers[tp]
        self._size -= taken
        return out
