"""Where the change feed stands in one table, and which rows its next read must return. Pure.

A row's ``updated_seq`` is taken when it is written, but transactions commit
in any order: with two writers (two ``projector run`` instances, or a
``dlq replay`` beside the engine), batch A may take sequences 100..150, batch
B 151..200 and commit first. A feed that read "everything above 99" after B's
commit and moved its cursor to 200 would never see A's rows. So every read
reports the snapshot it ran in, and the transactions that snapshot saw
running (``running``, from ``pg_current_snapshot()``) become *suspects* of
the table, each with the cursor as it was before that read: its rows can only
lie above it. Once a later snapshot shows a suspect finished, the next read
also returns the rows that transaction wrote between that cursor and the
current one (``xmin`` names the writer; ``ReadPlan``). A read whose snapshot
is the first to show a suspect finished returns its rows above that read's
``after`` already: the rows owed are then only those up to it (a suspect's
*bound*), or they would be sent twice. A transaction that is
neither running at a snapshot nor visible in it started after it, and takes
sequences above everything the snapshot showed: it needs no such care.

What this does not cover: a writer that took a sequence value but had no
transaction id yet when a snapshot was taken (between ``nextval()`` and the
first row write of the same statement, microseconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Rows carry 32-bit xids in xmin; snapshots list 64-bit ones.
_XID32 = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class TxSnapshot:
    """The transactions running at a read (32-bit ids, other databases' left out)."""

    running: frozenset[int]

    @classmethod
    def parse(cls, text: str, foreign: Iterable[int] = ()) -> TxSnapshot:
        """From ``pg_current_snapshot()::text`` (``xmin:xmax:xip,...``)."""
        try:
            _, _, xip = text.split(":")
            running = {int(x) & _XID32 for x in xip.split(",") if x}
        except ValueError as exc:
            raise ValueError(f"not a pg_snapshot: {text!r}") from exc
        return cls(frozenset(running - {int(x) & _XID32 for x in foreign}))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Rows with ``updated_seq > low`` that are above ``after``, or written by one of
    ``xids`` with a sequence at most its entry in ``highs``."""

    low: int
    after: int
    xids: tuple[int, ...]
    highs: tuple[int, ...] = ()


class TableCursor:
    """The highest sequence read from a table, its oid, its suspects (xid -> lowest
    sequence its rows may have) and the bounds of finished ones (xid -> highest
    sequence of its rows not read yet)."""

    __slots__ = ("bounds", "oid", "seq", "suspects")

    def __init__(self, seq: int, oid: int | None, suspects: dict[int, int] | None = None) -> None:
        self.seq = seq
        self.oid = oid
        self.suspects: dict[int, int] = dict(suspects or {})
        self.bounds: dict[int, int] = {}

    def plan(self, latest: TxSnapshot) -> ReadPlan:
        """What the next read must return, given the latest snapshot known (any read's:
        a transaction finished then is finished in every later one)."""
        finished = tuple(x for x in self.suspects if x not in latest.running)
        low = min((self.suspects[x] for x in finished), default=self.seq)
        # Rows above ``seq`` come anyway; a bound excludes rows an earlier read returned.
        highs = tuple(min(self.bounds.get(x, self.seq), self.seq) for x in finished)
        return ReadPlan(min(low, self.seq), self.seq, finished, highs)

    def advance(self, plan: ReadPlan, highest: int | None, seen: TxSnapshot) -> bool:
        """After the read of ``plan`` in snapshot ``seen``; ``highest`` is the largest
        sequence it returned. True if a suspect has finished since the plan was made:
        another read is owed (it looks for that transaction's rows)."""
        for xid in plan.xids:
            self.suspects.pop(xid, None)
            self.bounds.pop(xid, None)
        for xid in self.suspects:
            if xid not in seen.running and xid not in self.bounds:
                # Finished before this read's snapshot: this read returned its rows
                # above ``plan.after``; the next one owes only those up to it.
                self.bounds[xid] = plan.after
        for xid in seen.running:
            self.suspects.setdefault(xid, plan.after)
        if highest is not None and highest > self.seq:
            self.seq = highest
        return any(x not in seen.running for x in self.suspects)

    def reset(self, seq: int, oid: int | None) -> None:
        """The table was replaced (a rebuild swap): start over at ``seq``."""
        self.seq = seq
        self.oid = oid
        self.suspects.clear()
        self.bounds.clear()


def established(first_top: int, top: int, oid: int | None, snapshot: TxSnapshot,
                stragglers: Iterable[int]) -> TableCursor:
    """The cursor of a feed starting now.

    ``first_top`` was the table's highest sequence in a first snapshot; every
    transaction running then has finished since, except ``stragglers``. ``top``
    is the highest sequence in ``snapshot``, a second one. A transaction running
    at the second snapshot started after the first, so its rows lie above
    ``first_top``; a straggler's could lie anywhere. (A straggler that ends
    before the first read is then looked for at once: ``advance`` owes a read.)
    """
    late = set(stragglers)
    return TableCursor(top, oid, {x: 0 if x in late else first_top for x in snapshot.running})
