"""The simulator: deterministic, realistic, decodable, lazy; and publishing to a real broker."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from projector.commands import simulate as simulate_command
from projector.contracts import decode
from projector.events import DEFAULT_TOPICS, EVENT_TYPES, TOPIC_OF, Event, Rejection, RejectReason
from projector.settings import Settings
from projector.simulator import Kind, Record, SimulationOptions, generate, publish, topic_map_for
from projector.topics import ensure_topics

CHAOS: dict[str, Any] = {"duplicates": 0.05, "invalid": 0.05, "reorder": True}


def test_same_seed_same_records_other_seed_other_records() -> None:
    a = list(generate(orders=200, seed=11, **CHAOS))
    b = list(generate(orders=200, seed=11, **CHAOS))
    c = list(generate(orders=200, seed=12, **CHAOS))
    assert a == b
    assert [r.value for r in a] != [r.value for r in c]


def test_chaos_does_not_change_the_story() -> None:
    def events(**chaos: object) -> dict[str, Event]:
        records = generate(orders=300, seed=5, **chaos)
        return {r.event.event_id: r.event for r in records if r.kind is Kind.EVENT and r.event}

    assert events() == events(**CHAOS)


def test_every_record_decodes_as_promised() -> None:
    kinds: Counter[Kind] = Counter()
    reasons: Counter[RejectReason] = Counter()
    for record in generate(orders=600, seed=3, duplicates=0.1, invalid=0.1, reorder=True):
        kinds[record.kind] += 1
        result = decode(record.value, record.key, record.headers)
        if record.valid:
            assert result == record.event, (record, result)
        else:
            assert isinstance(result, Rejection), record
            assert result.reason is record.expect, (record, result.detail)
            reasons[result.reason] += 1
    assert kinds[Kind.DUPLICATE] > 0 and kinds[Kind.INVALID] > 0
    assert set(reasons) == set(RejectReason) - {RejectReason.PROJECTION_ERROR}


def test_outcome_proportions() -> None:
    n = 4000
    records = [r for r in generate(orders=n, seed=2) if r.kind is Kind.EVENT]
    by_type = Counter(r.event.event_type for r in records if r.event)
    assert by_type["OrderPlaced"] == n
    share = {t: by_type[t] / n for t in EVENT_TYPES}
    assert share["InventoryReservationFailed"] == pytest.approx(0.03, abs=0.01)
    assert share["PaymentFailed"] == pytest.approx(0.04, abs=0.01)
    assert share["OrderCancelled"] == pytest.approx(0.05, abs=0.012)
    assert share["PaymentRefunded"] == pytest.approx(0.02, abs=0.008)
    assert share["OrderDelivered"] == pytest.approx(0.88, abs=0.02)
    assert by_type["OrderDelivered"] == by_type["OrderShipped"]  # no cancellation after shipping


def test_customers_and_skus_are_skewed() -> None:
    placed = [r.event for r in generate(orders=3000, seed=4)
              if r.event and r.kind is Kind.EVENT and r.event.event_type == "OrderPlaced"]
    customers = Counter(e.payload["customer_id"] for e in placed)
    skus = Counter(i["sku"] for e in placed for i in e.payload["items"])
    top_customers = sum(c for _, c in customers.most_common(len(customers) // 100 or 1))
    assert top_customers / len(placed) > 0.05  # the top 1% of customers place >5% of orders
    top_skus = sum(c for _, c in skus.most_common(len(skus) // 10))
    assert top_skus / sum(skus.values()) > 0.3  # the top 10% of SKUs are >30% of lines


def test_wire_variety() -> None:
    records = [r for r in generate(orders=2000, seed=6) if r.kind is Kind.EVENT]
    n = len(records)
    nested = sum(b'"data":{' in r.value for r in records)
    keyless = sum(r.key is None for r in records)
    iso = sum(b'"timestamp":"' in r.value for r in records)
    v1 = sum(b'"quantity"' in r.value for r in records)
    headers = sum(bool(r.headers) for r in records)
    assert nested / n == pytest.approx(0.1, abs=0.03)
    assert keyless / n == pytest.approx(0.05, abs=0.02)
    assert iso / n == pytest.approx(0.1, abs=0.03)
    assert v1 > 0 and headers > 0


def test_duplicates_repeat_the_same_bytes_and_event_id() -> None:
    records = list(generate(orders=1000, seed=8, duplicates=0.1))
    firsts = {r.event.event_id: r for r in records if r.kind is Kind.EVENT and r.event}
    dups = [r for r in records if r.kind is Kind.DUPLICATE]
    assert len(dups) / len(firsts) == pytest.approx(0.1, abs=0.02)
    for dup in dups:
        assert dup.event is not None
        original = firsts[dup.event.event_id]
        assert (dup.topic, dup.key, dup.value, dup.headers) == (
            original.topic, original.key, original.value, original.headers)
    assert len(firsts) == sum(1 for r in records if r.kind is Kind.EVENT)  # ids are unique


def _out_of_order(records: list[Record]) -> int:
    last: dict[str, Event] = {}
    count = 0
    for r in records:
        if r.kind is not Kind.EVENT or r.event is None:
            continue
        prev = last.get(r.event.order_id)
        if prev is not None and r.event.occurred_at < prev.occurred_at:
            count += 1
        last[r.event.order_id] = r.event
    return count


def test_reorder_breaks_causal_order_only_when_asked() -> None:
    assert _out_of_order(list(generate(orders=500, seed=9))) == 0
    assert _out_of_order(list(generate(orders=500, seed=9, reorder=True))) > 20


def test_topics_follow_the_event_type_with_overrides() -> None:
    for r in generate(orders=50, seed=1):
        assert r.event and r.topic == TOPIC_OF[r.event.event_type]
    for r in generate(orders=50, seed=1, topic_prefix="t1."):
        assert r.event and r.topic == "t1." + TOPIC_OF[r.event.event_type]
    single = topic_map_for(("all-events",))
    assert {r.topic for r in generate(orders=50, seed=1, topic_map=single)} == {"all-events"}
    renamed = topic_map_for(tuple("x." + t for t in DEFAULT_TOPICS))
    assert renamed["OrderPlaced"] == "x.orders.order.placed"


def test_generation_is_lazy_and_memory_bounded() -> None:
    stream = generate(orders=250_000, seed=1, duplicates=0.05, invalid=0.05, reorder=True)
    assert isinstance(stream, Iterator)
    first = next(stream)  # does not build 250,000 orders first
    assert first.topic

    def peak_while_consuming(count: int) -> int:
        records = generate(orders=250_000, seed=1, duplicates=0.05, invalid=0.05, reorder=True)
        tracemalloc.start()
        try:
            for _ in itertools.islice(records, count):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_while_consuming(2_000), peak_while_consuming(20_000)
    # The customer/SKU tables are allocated up front; the stream itself must not grow.
    assert large < small * 1.2 + 1_000_000, (small, large)


def test_options_are_validated() -> None:
    from projector.errors import ConfigError

    with pytest.raises(ConfigError, match="duplicates"):
        SimulationOptions(duplicates=1.5)
    with pytest.raises(ConfigError, match="topic_map"):
        SimulationOptions(topic_map={"OrderPlaced": "x"})


# --- against the real broker ------------------------------------------------------


async def _consume(bootstrap: str, topics: list[str], count: int, timeout_s: float = 60) -> list[Record]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[Record] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for m in messages:
                        got.append(Record(tp.topic, m.key, m.value, tuple(m.headers), Kind.EVENT))
    finally:
        await consumer.stop()
    return got


async def test_publish_to_broker_and_decode_back(kafka_bootstrap: str) -> None:
    prefix = f"sim-{uuid.uuid4().hex[:8]}."
    options = SimulationOptions(orders=60, seed=21, topic_prefix=prefix, duplicates=0.05,
                                invalid=0.05, reorder=True)
    records = list(itertools.islice(generate(options), 200))
    assert len(records) == 200
    topics = sorted({options.topic_of(t) for t in EVENT_TYPES})
    await ensure_topics(kafka_bootstrap, topics, partitions=3)

    progress: list[int] = []
    stats = await publish(records, kafka_bootstrap, progress=lambda s: progress.append(s.sent))
    assert stats.sent == 200 and progress[-1] == 200
    assert stats.events + stats.duplicates + stats.invalid == 200

    consumed = await _consume(kafka_bootstrap, topics, 200)
    assert len(consumed) == 200
    expected = Counter((r.topic, r.key, r.value) for r in records)
    assert Counter((r.topic, r.key, r.value) for r in consumed) == expected

    promised = {(r.key, r.value): r for r in records}
    for got in consumed:
        sent = promised[(got.key, got.value)]
        assert got.headers == sent.headers
        result = decode(got.value, got.key, got.headers)
        if sent.valid:
            assert result == sent.event
        else:
            assert isinstance(result, Rejection) and result.reason is sent.expect


async def test_rate_limit_paces_publishing(kafka_bootstrap: str) -> None:
    prefix = f"rate-{uuid.uuid4().hex[:8]}."
    records = list(itertools.islice(generate(orders=10, seed=1, topic_prefix=prefix), 30))
    await ensure_topics(kafka_bootstrap, sorted({r.topic for r in records}), partitions=1)
    stats = await publish(records, kafka_bootstrap, rate=100)
    assert stats.sent == 30
    assert stats.elapsed_s >= 0.25  # 30 records at 100/s take at least ~0.29 s


def test_simulate_command(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    simulate_command.configure(parser)
    prefix = f"cli-{uuid.uuid4().hex[:8]}."
    args = parser.parse_args(["--orders", "20", "--seed", "3", "--duplicates", "0.1",
                              "--invalid", "0.1", "--reorder", "--topic-prefix", prefix])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    assert simulate_command.run(args, settings) == 0
    out = capsys.readouterr().out
    expected = list(generate(orders=20, seed=3, duplicates=0.1, invalid=0.1, reorder=True))
    assert f"published {len(expected):,} records" in out
    assert "for 20 orders to 10 topics" in out
