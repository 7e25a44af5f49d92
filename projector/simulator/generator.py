"""The simulated stream: orders -> facts -> wire records, lazily. Pure and deterministic.

Memory stays bounded whatever the number of orders: one order's facts are
made at a time, ``concurrency`` orders interleave, repeats wait in a small
heap and ``reorder`` shuffles inside a fixed window. Only the customer and
SKU tables grow with the size of the simulation.

Each concern draws from its own random stream (seeded from ``seed``), so the
orders do not change when chaos options do: ``duplicates=0.1`` adds records
to the same story rather than telling another one.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from projector.events import Event, RejectReason
from projector.simulator.chaos import corrupt, interleave, shuffled_window, with_repeats
from projector.simulator.lifecycle import order_story
from projector.simulator.options import SimulationOptions
from projector.simulator.population import Weighted, build_population
from projector.simulator.wire import Headers, encode


class Kind(enum.StrEnum):
    EVENT = "event"  # a valid event, first delivery
    DUPLICATE = "duplicate"  # the same bytes again (same event_id)
    INVALID = "invalid"  # must be rejected with `expect`


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish, and what decoding it must give."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    kind: Kind
    event: Event | None = None  # EVENT and DUPLICATE: the Event decode() must return
    expect: RejectReason | None = None  # INVALID: the reason decode() must give

    @property
    def valid(self) -> bool:
        return self.event is not None


def generate(options: SimulationOptions | None = None, /, **overrides: Any) -> Iterator[Record]:
    """Yield the records of a simulation, lazily; the same options give the same records.

    ``generate(orders=100, seed=7)`` is short for
    ``generate(SimulationOptions(orders=100, seed=7))``.
    """
    if options is None:
        options = SimulationOptions(**overrides)
    elif overrides:
        raise TypeError("pass either options or keyword overrides, not both")
    return _stream(options)


def _stream(options: SimulationOptions) -> Iterator[Record]:
    order_rng = random.Random(f"{options.seed}:orders")
    wire_rng = random.Random(f"{options.seed}:wire")
    chaos_rng = random.Random(f"{options.seed}:chaos")
    mix_rng = random.Random(f"{options.seed}:mix")

    def per_order() -> Iterator[list[Record]]:
        population = build_population(options.customer_count, options.sku_count, options.seed)
        outcomes = Weighted(options.outcomes.items())
        placed_at = options.start
        for n in range(1, options.orders + 1):
            placed_at += timedelta(
                seconds=int(order_rng.expovariate(1 / options.mean_order_interval_s))
            )
            facts = order_story(f"order-{options.seed}-{n}", placed_at, population, outcomes, order_rng)
            records: list[Record] = []
            for fact in facts:
                if options.event_types is not None and fact.event_type not in options.event_types:
                    continue
                enc = encode(fact, options, wire_rng)
                topic = options.topic_of(fact.event_type)
                records.append(Record(topic, enc.key, enc.value, enc.headers, Kind.EVENT, enc.event))
                if options.invalid and chaos_rng.random() < options.invalid:
                    key, value, reason = corrupt(enc, chaos_rng)
                    records.append(Record(topic, key, value, enc.headers, Kind.INVALID, None, reason))
            yield records

    merged = interleave(per_order(), options.concurrency, mix_rng)
    repeated = (
        Record(r.topic, r.key, r.value, r.headers, Kind.DUPLICATE, r.event) if again else r
        for r, again in with_repeats(
            merged, options.duplicates, chaos_rng, eligible=lambda r: r.kind is Kind.EVENT
        )
    )
    if options.reorder:
        yield from shuffled_window(repeated, options.reorder_window, mix_rng)
    else:
        yield from repeated
