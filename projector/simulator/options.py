"""What to simulate: one frozen options value, validated when built."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from projector.errors import ConfigError
from projector.events import DEFAULT_TOPICS, EVENT_TYPES, TOPIC_OF

# Outcome of an order -> share of orders. "refunded" orders are delivered first.
DEFAULT_OUTCOMES: Mapping[str, float] = {
    "delivered": 0.86,
    "refunded": 0.02,
    "cancelled": 0.05,
    "payment_failed": 0.04,
    "inventory_failed": 0.03,
}


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    """Parameters of one simulated stream. Defaults give a realistic, valid-only stream.

    Sizes: ``customers`` / ``skus`` default to ``0.4 * orders`` (at least 100)
    and ``500 * sqrt(orders / 25_000)`` (50..5,000), i.e. 10,000 and 500 for
    25,000 orders.

    Wire variety (fractions of the valid events, each drawn independently):
    ``nested`` payload under "data", ``iso_timestamps`` RFC 3339 strings
    instead of Unix seconds, ``v1_order_placed`` (of USD OrderPlaced events)
    the legacy schema, ``keyless`` no Kafka key, ``string_money`` amounts as
    JSON strings.

    Chaos: ``duplicates`` is the probability that a valid event is sent a
    second time, identical, a few records later; ``invalid`` the probability
    that an invalid record is emitted next to a valid event; ``reorder``
    shuffles the stream within ``reorder_window`` records, so events of an
    order can arrive out of causal order across topics.

    ``concurrency`` orders are in flight at once (their events interleave).
    ``topic_map`` overrides TOPIC_OF per event type; ``topic_prefix`` is put
    in front of every topic name. ``event_types``, when given, keeps only
    those types (the benchmark uses it for OrderPlaced alone).
    """

    orders: int = 1000
    seed: int = 1
    customers: int | None = None
    skus: int | None = None
    start: datetime = datetime(2024, 11, 1, 8, 0, tzinfo=UTC)
    mean_order_interval_s: float = 4.0
    outcomes: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_OUTCOMES))
    nested: float = 0.1
    iso_timestamps: float = 0.1
    v1_order_placed: float = 0.05
    keyless: float = 0.05
    string_money: float = 0.1
    duplicates: float = 0.0
    invalid: float = 0.0
    reorder: bool = False
    reorder_window: int = 64
    concurrency: int = 16
    topic_map: Mapping[str, str] | None = None
    topic_prefix: str = ""
    event_types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.orders < 0:
            raise ConfigError(f"orders must be >= 0, got {self.orders}.")
        for name in ("nested", "iso_timestamps", "v1_order_placed", "keyless", "string_money",
                     "duplicates", "invalid"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is a fraction: expected 0..1, got {value}.")
        if self.start.tzinfo is None:
            raise ConfigError("start must be a timezone-aware datetime.")
        if self.reorder_window < 1 or self.concurrency < 1:
            raise ConfigError("reorder_window and concurrency must be >= 1.")
        if self.mean_order_interval_s <= 0:
            raise ConfigError("mean_order_interval_s must be > 0.")
        unknown = set(self.outcomes) - set(DEFAULT_OUTCOMES)
        if unknown or not self.outcomes or any(w < 0 for w in self.outcomes.values()):
            raise ConfigError(
                f"outcomes: weights >= 0 for some of {sorted(DEFAULT_OUTCOMES)}; got {dict(self.outcomes)}."
            )
        if self.event_types is not None and not self.event_types <= set(EVENT_TYPES):
            raise ConfigError(f"event_types: unknown {sorted(self.event_types - set(EVENT_TYPES))}.")
        if self.topic_map is not None:
            missing = set(EVENT_TYPES) - set(self.topic_map)
            if missing:
                raise ConfigError(f"topic_map has no topic for {sorted(missing)}.")

    @property
    def customer_count(self) -> int:
        return self.customers if self.customers is not None else max(100, round(self.orders * 0.4))

    @property
    def sku_count(self) -> int:
        if self.skus is not None:
            return self.skus
        return min(5000, max(50, round(500 * math.sqrt(self.orders / 25_000))))

    def topic_of(self, event_type: str) -> str:
        base = (self.topic_map or TOPIC_OF)[event_type]
        return self.topic_prefix + base


def topic_map_for(topics: Sequence[str]) -> Mapping[str, str]:
    """Map event types to a configured topic list (``Settings.topics``).

    Ten topics are taken in the order of ``DEFAULT_TOPICS``; a single topic
    carries every type; otherwise each type's default topic must be listed.
    """
    if len(topics) == len(DEFAULT_TOPICS):
        by_default = dict(zip(DEFAULT_TOPICS, topics, strict=True))
        return {t: by_default[TOPIC_OF[t]] for t in EVENT_TYPES}
    if len(topics) == 1:
        return dict.fromkeys(EVENT_TYPES, topics[0])
    missing = [TOPIC_OF[t] for t in EVENT_TYPES if TOPIC_OF[t] not in topics]
    if missing:
        raise ConfigError(
            f"cannot tell which of the topics {list(topics)} carries which event type: give one "
            f"topic, all ten in the order of the defaults, or include {missing}."
        )
    return dict(TOPIC_OF)
