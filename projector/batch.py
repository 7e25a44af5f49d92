"""Sorting a fetched batch into per-projection work. Pure: no I/O.

A record is decoded once, whatever the number of projections. Each projection
takes only the records at or above its own checkpoint, so projections whose
checkpoints differ (one paused, one rebuilt) share one consumer.
"""

from __future__ import annotations

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
    """A batch after decoding: per partition, (offset, Positioned | DeadLetter | str).

    A str is the type of an event no projection knows: skipped, and counted
    once a projection moves past it.
    """

    by_tp: dict[TP, list[tuple[int, Positioned | DeadLetter | str]]]
    raw: dict[TP, list[Any]]
    """The ConsumerRecords, per partition, in offset order."""

    def record(self, topic: str, partition: int, offset: int) -> Any:
        """The ConsumerRecord at ``offset`` (looked up for the rare event that failed)."""
        for rec in self.raw[(topic, partition)]:
            if rec.offset == offset:
                return rec
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
    headers = list(rec.headers or ())
    result = decode(rec.value, rec.key, headers)
    if isinstance(result, Event):
        return Positioned(result, topic, partition, rec.offset)
    if result.reason is RejectReason.UNKNOWN_EVENT_TYPE:
        return result.event_type or "?"
    return DeadLetter(ALL_PROJECTIONS, topic, partition, rec.offset, rec.key, rec.value, headers,
                      result.reason.value, result.detail, None, result.event_type)


def decoded_batch(taken: Mapping[TP, Sequence[tuple[Any, ...]]]) -> Decoded:
    """A batch of records decoded beforehand: per partition, ``(timestamp, record, item)``."""
    return Decoded(by_tp={tp: [(e[1].offset, e[2]) for e in entries] for tp, entries in taken.items()},
                   raw={tp: [e[1] for e in entries] for tp, entries in taken.items()})


def plan_work(projections: Sequence[Projection], positions: Mapping[str, Mapping[TP, int]],
              decoded: Decoded) -> tuple[list[ProjectionWork], dict[str, int]]:
    """Per projection, the records at or above its checkpoint, per partition.

    Also returns the unknown event types passed over for the first time
    (a record re-fetched after a seek is not counted again).
    """
    work: list[ProjectionWork] = []
    unknown: dict[TP, dict[int, str]] = {}
    for p in projections:
        pos = positions.get(p.name, {})
        parts: dict[TP, PartitionWork] = {}
        for tp, items in decoded.by_tp.items():
            if tp not in pos or not items:
                continue  # not ours (any more), or paused
            expected = pos[tp]
            start = 0 if expected == FROM_LOG_START else expected
            mine = [(o, x) for o, x in items if o >= start]
            if not mine:
                continue
            pw = PartitionWork(expected, mine[-1][0] + 1)
            for offset, x in mine:
                if isinstance(x, Positioned):
                    pw.events.append(x)
                elif isinstance(x, DeadLetter):
                    pw.rejected.append(x)
                else:
                    unknown.setdefault(tp, {})[offset] = x
            parts[tp] = pw
        if parts:
            work.append(ProjectionWork(p, parts))
    types: dict[str, int] = {}
    for per_offset in unknown.values():
        for name in per_offset.values():
            types[name] = types.get(name, 0) + 1
    return work, types
