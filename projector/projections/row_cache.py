"""A bounded cache of the rows this process wrote, checked by the database on write.

An order's events arrive spread over a few minutes, so most batches touch rows
that an earlier batch of this process just wrote. Keeping each written row with
a *fingerprint* of it spares reading and decoding the row again: the next
write of the row is compare-and-set against the fingerprint, so a copy the
table no longer holds (another writer, a rolled-back transaction) is caught
there and the row is read and folded again.

For ``order_summary`` the fingerprint is the ``event_ids`` array literal: a row
is a function of its event set, so a stored row with the same ``event_ids`` is
the cached row. That holds whether or not the writing transaction committed,
whoever wrote the row since, and even against another database: nothing is
trusted that the database does not confirm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, TypeVar

R = TypeVar("R")


class RowCache(Generic[R]):
    """Rows by (physical table, key), each with its fingerprint.

    Holds at most ``max_rows`` rows (default 20,000; an order_summary row with
    its fingerprint takes ~3 KB), evicting the least recently written; 0
    disables it. Used by one asyncio loop at a time, never shared between
    processes.
    """

    def __init__(self, max_rows: int = 20_000) -> None:
        if max_rows < 0:
            raise ValueError(f"RowCache max_rows must be >= 0, got {max_rows}")
        self.max_rows = max_rows
        # Write order, the first key being the one to evict. An OrderedDict, not
        # a dict: a dict's first key, after many deletions from the front, is
        # found by scanning past their empty slots (~20 µs per eviction here).
        self._rows: OrderedDict[tuple[str, str], tuple[str, R]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, table: str, keys: Sequence[str]) -> dict[str, tuple[str, R]]:
        """``{key: (fingerprint, row)}`` for the keys cached; a snapshot, safe across awaits."""
        rows = self._rows
        out: dict[str, tuple[str, R]] = {}
        for key in keys:
            hit = rows.get((table, key))
            if hit is not None:
                out[key] = hit
        return out

    def put(self, table: str, key: str, fingerprint: str, row: R) -> None:
        """Remember ``row`` as written to ``table``."""
        if self.max_rows == 0:
            return
        rows = self._rows
        at = (table, key)
        if at in rows:
            rows.move_to_end(at)
        rows[at] = (fingerprint, row)
        if len(rows) > self.max_rows:
            rows.popitem(last=False)

    def clear(self) -> None:
        self._rows.clear()
