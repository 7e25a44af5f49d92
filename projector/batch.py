"""Sorting a fetched batch into per-projection work. Pure: no I/O.

A record is decoded once, whatever the number of projections. Each projection
takes only the records at or above its own checkpoint, so projections whose
checkpoints differ (one paused, one rebuilt) share one consumer.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from projector.checkpoints import FROM_LOG_START, TP
from projector.dead_letters import ALL_PROJECTIONS, DeadLetter
from projector.events import Event, Rejection, RejectReason
from projector.projection import Positioned, Projection

DecodeFn = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Event | Rejection]


@dataclass(slots=True)
class Decoded:
    """A batch after decoding: per partition, in offset order, the entries
    ``(timestamp, record, item)`` the aligner held, where ``item`` is a
    Positioned, a DeadLetter, or a str: the type of an event no projection
    knows (skipped, and counted once a projection moves past it).
    """

    by_tp: Mapping[TP, Sequence[tuple[Any, ...]]]

    def record(self, topic: str, partition: int, offset: int) -> Any:
        """The ConsumerRecord at ``offset`` (looked up for the rare event that failed)."""
        for entry in self.by_tp[(topic, partition)]:
            if entry[1].offset == offset:
                return entry[1]
        raise KeyError((topic, partition, offset))


@dataclass(slots=True)
class PartitionWork:
    expected: int  # the checkpoint we expect to find stored (compare-and-set)
    next_offset: int
    events: list[Positioned] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)


@dataclass(slots=True)
class ProjectionWork:
    projection: Projection
    partitions: dict[TP, PartitionWork]


Item = Positioned | DeadLetter | str


def decode_one(topic: str, partition: int, rec: Any, decode: DecodeFn) -> Item:
    """A record decoded: its event, its shared dead letter, or the type no projection knows.

    Unknown event types are skipped and counted, since a shared topic may
    carry other teams' types.
    """
    headers = rec.headers or ()
    result = decode(rec.value, rec.key, headers)
    if isinstance(result, Event):
        return Positioned(result, topic, partition, rec.offset)
    if result.reason is RejectReason.UNKNOWN_EVENT_TYPE:
        return result.event_type or "?"
    return DeadLetter(ALL_PROJECTIONS, topic, partition, rec.offset, rec.key, rec.value, list(headers),
                      result.reason.value, result.detail, None, result.event_type)


@dataclass(slots=True)
class _Sorted:
    """One partition's part of a batch, sorted once for every projection."""

    offsets: list[int]
    events: list[Positioned]
    pure: bool  # every item is an event (no rejection, no unknown type)


def _sort(entries: Sequence[tuple[Any, ...]]) -> _Sorted:
    items = [e[2] for e in entries]
    events = [x for x in items if type(x) is Positioned]
    return _Sorted([e[1].offset for e in entries], events, len(events) == len(items))


def plan_work(projections: Sequence[Projection], positions: Mapping[str, Mapping[TP, int]],
              decoded: Decoded) -> tuple[list[ProjectionWork], dict[str, int]]:
    """Per projection, the records at or above its checkpoint, per partition.

    Also returns the unknown event types passed over for the first time
    (a record re-fetched after a seek is not counted again).
    """
    work: list[ProjectionWork] = []
    unknown: dict[TP, dict[int, str]] = {}
    sorted_: dict[TP, _Sorted] = {}
    for p in projections:
        pos = positions.get(p.name, {})
        parts: dict[TP, PartitionWork] = {}
        for tp, entries in decoded.by_tp.items():
            if tp not in pos or not entries:
                continue  # not ours (any more), or paused
            part = sorted_.get(tp)
            if part is None:
                part = sorted_[tp] = _sort(entries)
            expected = pos[tp]
            start = 0 if expected == FROM_LOG_START else expected
            if part.offsets[-1] < start:
                continue
            pw = PartitionWork(expected, part.offsets[-1] + 1)
            if part.pure and part.offsets[0] >= start:
                # The common case: the whole partition, events only. One list shared by
                # the projections, which only read it.
                pw.events = part.events
            else:
                for entry in entries[bisect_left(part.offsets, start):]:
                    x = entry[2]
                    if isinstance(x, Positioned):
                        pw.events.append(x)
                    elif isinstance(x, DeadLetter):
                        pw.rejected.append(x)
                    else:
                        unknown.setdefault(tp, {})[entry[1].offset] = x
            parts[tp] = pw
        if parts:
            work.append(ProjectionWork(p, parts))
    types: dict[str, int] = {}
    for per_offset in unknown.values():
        for name in per_offset.values():
            types[name] = types.get(name, 0) + 1
    return work, types
