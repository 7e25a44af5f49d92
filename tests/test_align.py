"""The aligner: batches across partitions in timestamp order, never reordering a partition."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from projector.align import Aligner


@dataclass(frozen=True)
class Rec:
    offset: int
    timestamp: int


def _partition(timestamps: list[int], start: int = 0) -> list[tuple[int, Rec]]:
    return [(ts, Rec(start + i, ts)) for i, ts in enumerate(timestamps)]


def _offsets(entries: list[tuple[int, Rec]]) -> list[int]:
    return [r.offset for _, r in entries]


def test_the_oldest_records_of_all_partitions_come_first() -> None:
    a = Aligner(cap=100)
    a.add({("placed", 0): _partition([1, 2, 3, 10, 11]), ("paid", 0): _partition([2, 4, 12])})
    batch = a.take(5)
    assert _offsets(batch[("placed", 0)]) == [0, 1, 2]
    assert _offsets(batch[("paid", 0)]) == [0, 1]
    assert len(a) == 3
    rest = a.take(10)
    assert _offsets(rest[("placed", 0)]) == [3, 4]
    assert _offsets(rest[("paid", 0)]) == [2]
    assert len(a) == 0 and a.take(10) == {}


def test_a_batch_stops_where_a_partition_with_more_to_fetch_runs_out() -> None:
    # "placed" has more records on the broker than buffered: what comes after
    # its newest buffered timestamp (3) may be preceded by records not fetched yet.
    a = Aligner(cap=100)
    a.add({("placed", 0): _partition([1, 2, 3]), ("paid", 0): _partition([2, 4, 5, 9])})
    horizon = a.horizon([("placed", 0)])
    assert horizon == 3
    batch = a.take(100, horizon)
    assert _offsets(batch[("placed", 0)]) == [0, 1, 2]
    assert _offsets(batch[("paid", 0)]) == [0]
    assert len(a) == 3
    # Once nothing is left to fetch there, no horizon: the rest may go.
    assert a.horizon([]) is None and a.horizon([("placed", 0)]) is None
    assert _offsets(a.take(100, None)[("paid", 0)]) == [1, 2, 3]


def test_catching_up_a_batch_waits_for_every_partition_with_records_to_fetch() -> None:
    a = Aligner(cap=100)
    assert a.ready([], 0, batch=10, waited_s=0.0) == (False, None)  # nothing buffered
    a.add({("paid", 0): _partition([2, 4, 5])})
    # "placed" has 500 records to fetch and none buffered: its oldest ones are unknown.
    assert a.ready([("placed", 0)], 500, batch=10, waited_s=0.1) == (False, None)
    assert a.ready([("placed", 0)], 500, batch=10, waited_s=1.5) == (True, None)
    a.add({("placed", 0): _partition([1, 3])})
    assert a.ready([("placed", 0)], 498, batch=10, waited_s=0.1) == (True, 3)


def test_in_the_live_tail_a_batch_takes_what_is_here() -> None:
    # A broker may report an end past the records its fetch returned: the partition
    # counts as having records to fetch, with none buffered. Live, that must not hold
    # the others' records back until its next fetch.
    a = Aligner(cap=100)
    a.add({("paid", 0): _partition([2, 4, 5])})
    assert a.ready([("placed", 0)], 2, batch=10, waited_s=0.0) == (True, None)
    a.add({("placed", 0): _partition([1])})
    cut, horizon = a.ready([("placed", 0)], 2, batch=10, waited_s=0.0)
    assert cut and horizon is None
    assert sum(len(v) for v in a.take(10, horizon).values()) == 4


def test_a_clock_going_backwards_does_not_hold_a_partition_back() -> None:
    # The last record fetched from "placed" is older than the ones before it (two
    # producers, two clocks). The horizon is the newest timestamp fetched there, so
    # the whole partition can go in one batch: a horizon at its last record (2)
    # would keep 10 and 11 waiting behind it, batch after batch.
    a = Aligner(cap=100)
    a.add({("placed", 0): _partition([10, 11, 2]), ("paid", 0): _partition([5, 12])})
    horizon = a.horizon([("placed", 0)])
    assert horizon == 11
    batch = a.take(100, horizon)
    assert _offsets(batch[("placed", 0)]) == [0, 1, 2]
    assert _offsets(batch[("paid", 0)]) == [0]


def test_full_partitions_and_forget() -> None:
    a = Aligner(cap=3)
    a.add({("a", 0): _partition([1, 2, 3]), ("b", 0): _partition([1])})
    assert a.full() == {("a", 0)}
    a.forget([("a", 0), ("c", 9)])
    assert len(a) == 1 and ("a", 0) not in a and ("b", 0) in a
    assert a.full() == set()


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.lists(st.lists(st.integers(0, 50), max_size=30), min_size=1, max_size=6),
    sizes=st.lists(st.integers(1, 25), min_size=1, max_size=20),
)
def test_every_record_once_in_offset_order(partitions: list[list[int]], sizes: list[int]) -> None:
    # Timestamps may go backwards inside a partition (producers' clocks, retries).
    a = Aligner(cap=1000)
    fetched = {("t", p): _partition(ts, start=100 * p) for p, ts in enumerate(partitions)}
    # Added in two fetches per partition: buffers grow at their tail.
    a.add({tp: recs[: len(recs) // 2] for tp, recs in fetched.items()})
    a.add({tp: recs[len(recs) // 2:] for tp, recs in fetched.items()})
    seen: dict[tuple[str, int], list[tuple[int, Rec]]] = {}
    for n in [*sizes, 10_000]:
        before = len(a)
        batch = a.take(n)
        taken = sum(len(v) for v in batch.values())
        assert taken == min(n, before)
        for tp, recs in batch.items():
            seen.setdefault(tp, []).extend(recs)
    assert len(a) == 0
    assert seen == {tp: v for tp, v in fetched.items() if v}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), max_size=20).map(sorted), min_size=1, max_size=5),
       st.integers(1, 40))
def test_sorted_partitions_give_the_globally_oldest(partitions: list[list[int]], n: int) -> None:
    a = Aligner(cap=1000)
    a.add({("t", p): _partition(ts) for p, ts in enumerate(partitions)})
    batch = a.take(n)
    taken = sorted(ts for entries in batch.values() for ts, _ in entries)
    everything = sorted(ts for ts_list in partitions for ts in ts_list)
    assert taken == everything[: len(taken)]
