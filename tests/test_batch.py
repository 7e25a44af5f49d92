"""Sorting a decoded batch into per-projection work (projector.batch): pure, no servers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import ConsumerRecord

from projector.batch import Decoded, decode_one, plan_work
from projector.checkpoints import FROM_LOG_START
from projector.dead_letters import ALL_PROJECTIONS, DeadLetter
from projector.events import Event, Rejection, RejectReason
from projector.projection import Positioned

A = ("orders.order.placed", 0)
B = ("payment.order.succeeded", 1)


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.version = 1
        self.tables: tuple[str, ...] = ()


def _record(tp: tuple[str, int], offset: int, value: bytes) -> Any:
    return ConsumerRecord(tp[0], tp[1], offset, 1_000 + offset, 0, b"k", value, None, 1,
                          len(value), (("h", b"v"),))


def _decode(value: bytes | None, key: bytes | None, headers: Any) -> Event | Rejection:
    # b"bad": rejected; b"other": a type no projection knows; else an event whose id is the value.
    if value == b"bad":
        return Rejection(RejectReason.SCHEMA_VIOLATION, "no order_id", value, key, "OrderPlaced")
    if value == b"other":
        return Rejection(RejectReason.UNKNOWN_EVENT_TYPE, "?", value, key, "LoyaltyPointsGranted")
    assert value is not None
    return Event(value.decode(), "OrderPlaced", "o-1", datetime(2026, 1, 1, tzinfo=UTC), {})


def _batch(values: Mapping[tuple[str, int], list[bytes]], first: int = 10) -> Any:
    taken = {}
    for tp, vs in values.items():
        recs = [_record(tp, first + i, v) for i, v in enumerate(vs)]
        taken[tp] = [(r.timestamp, r, decode_one(tp[0], tp[1], r, _decode)) for r in recs]
    return Decoded(taken)


def test_decode_one_makes_an_event_a_dead_letter_or_an_unknown_type() -> None:
    event = decode_one(*A, _record(A, 5, b"e1"), _decode)
    assert isinstance(event, Positioned) and event.event.event_id == "e1"
    assert (event.topic, event.partition, event.offset) == (A[0], A[1], 5)
    letter = decode_one(*A, _record(A, 6, b"bad"), _decode)
    assert isinstance(letter, DeadLetter)
    assert (letter.projection, letter.offset, letter.reason) == (ALL_PROJECTIONS, 6, "schema_violation")
    assert letter.headers == [("h", b"v")] and letter.value == b"bad"
    assert decode_one(*A, _record(A, 7, b"other"), _decode) == "LoyaltyPointsGranted"


def test_projections_at_one_checkpoint_share_a_partitions_events() -> None:
    decoded = _batch({A: [b"e1", b"e2", b"e3"], B: [b"e4"]})
    positions = {"orders": {A: 10, B: FROM_LOG_START}, "timeline": {A: 10, B: FROM_LOG_START}}
    work, unknown = plan_work([_Named("orders"), _Named("timeline")], positions, decoded)  # type: ignore[list-item]
    orders, timeline = work
    assert [e.event.event_id for e in orders.partitions[A].events] == ["e1", "e2", "e3"]
    assert orders.partitions[A].events is timeline.partitions[A].events  # sorted once
    assert (orders.partitions[A].expected, orders.partitions[A].next_offset) == (10, 13)
    assert (orders.partitions[B].expected, orders.partitions[B].next_offset) == (FROM_LOG_START, 11)
    assert unknown == {}


def test_each_projection_takes_its_records_from_its_own_checkpoint() -> None:
    # orders is past e1 and the rejection; timeline is behind all of it; a partition
    # not in a projection's positions (paused, revoked) is not its work.
    decoded = _batch({A: [b"e1", b"bad", b"other", b"e2"], B: [b"e3"]})
    positions = {"orders": {A: 12, B: 10}, "timeline": {A: 10}}
    work, unknown = plan_work([_Named("orders"), _Named("timeline")], positions, decoded)  # type: ignore[list-item]
    orders, timeline = work
    assert [e.event.event_id for e in orders.partitions[A].events] == ["e2"]
    assert orders.partitions[A].rejected == [] and orders.partitions[A].next_offset == 14
    assert [e.event.event_id for e in timeline.partitions[A].events] == ["e1", "e2"]
    assert [d.offset for d in timeline.partitions[A].rejected] == [11]
    assert set(orders.partitions) == {A, B} and set(timeline.partitions) == {A}
    # The unknown type at offset 12 counts once, whichever projections pass it.
    assert unknown == {"LoyaltyPointsGranted": 1}


def test_a_projection_past_a_partitions_records_gets_no_work_there() -> None:
    decoded = _batch({A: [b"e1", b"e2"]})
    work, _ = plan_work([_Named("orders")], {"orders": {A: 12}}, decoded)  # type: ignore[list-item]
    assert work == []
    assert decoded.record(A[0], A[1], 11).value == b"e2"
