"""The story of one order, as a list of facts in causal order. Pure.

A fact is what happened, before any wire encoding: its payload already has
the normalised shape the decoder produces (every declared field, None for an
absent optional one, money as Decimal, times as UTC datetimes, items as a
tuple of dicts), so an expected Event is the fact plus envelope choices.

Happy path: OrderPlaced, InventoryReserved, PaymentSucceeded,
ShippingScheduled, OrderShipped, OrderDelivered. Other outcomes stop early
(inventory or payment failure), cancel before shipping (after any of the
first four steps), or add a PaymentRefunded after delivery (full or partial).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from projector.simulator.population import Population, Weighted

PRODUCER_OF: Mapping[str, str] = {
    "OrderPlaced": "order-service",
    "OrderCancelled": "order-service",
    "InventoryReserved": "inventory-service",
    "InventoryReservationFailed": "inventory-service",
    "PaymentSucceeded": "payment-service",
    "PaymentFailed": "payment-service",
    "PaymentRefunded": "payment-service",
    "ShippingScheduled": "shipping-service",
    "OrderShipped": "shipping-service",
    "OrderDelivered": "shipping-service",
}
CARRIERS = ("DHL", "UPS", "FedEx", "USPS", "DPD", "GLS")
CURRENCIES = Weighted([("USD", 0.80), ("EUR", 0.15), ("GBP", 0.05)])
_CANCEL_REASONS = ("customer request", "found a better price", "ordered by mistake",
                   "delivery too slow", "fraud check")
_STOCK_REASONS = ("out of stock", "warehouse closed", "item discontinued")
_PAYMENT_REASONS = ("card declined", "insufficient funds", "3-D Secure failed", "card expired")
_ITEM_COUNTS = Weighted([(1, 0.5), (2, 0.3), (3, 0.15), (4, 0.05)])
_QTYS = Weighted([(1, 0.7), (2, 0.2), (3, 0.08), (5, 0.02)])
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Fact:
    event_id: str
    event_type: str
    order_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    causation_id: str | None
    correlation_id: str
    producer: str


_ID_PREFIX = {t: re.sub(r"(?<!^)(?=[A-Z])", "-", t).lower() + "-" for t in PRODUCER_OF}


def event_id_for(event_type: str, order_id: str) -> str:
    """``inventory-reserved-order-1-42``: deterministic, so a re-sent event keeps its id."""
    return _ID_PREFIX[event_type] + order_id


def _after(rng: random.Random, at: datetime, lo_s: float, hi_s: float) -> datetime:
    # Whole seconds: the wire carries Unix seconds.
    return at + timedelta(seconds=int(rng.uniform(lo_s, hi_s)))


def order_story(
    order_id: str,
    placed_at: datetime,
    population: Population,
    outcomes: Weighted[str],
    rng: random.Random,
) -> list[Fact]:
    """The facts of one order, in causal order (timestamps never decrease)."""
    outcome = outcomes.draw(rng)
    facts: list[Fact] = []
    correlation = f"corr-{order_id}"

    def add(event_type: str, at: datetime, **payload: Any) -> datetime:
        facts.append(Fact(
            event_id=event_id_for(event_type, order_id),
            event_type=event_type,
            order_id=order_id,
            occurred_at=at,
            payload={"order_id": order_id, **payload},
            causation_id=facts[-1].event_id if facts else None,
            correlation_id=correlation,
            producer=PRODUCER_OF[event_type],
        ))
        return at

    lines: dict[int, int] = {}
    for _ in range(_ITEM_COUNTS.draw(rng)):
        sku = population.sku(rng)
        lines[sku] = lines.get(sku, 0) + _QTYS.draw(rng)
    items = tuple(
        {"sku": population.skus[s], "qty": q, "unit_price": population.prices[s]}
        for s, q in lines.items()
    )
    total = sum((population.prices[s] * q for s, q in lines.items()), Decimal("0.00"))
    at = add("OrderPlaced", placed_at, customer_id=population.customer(rng), items=items,
             total_amount=total, currency=CURRENCIES.draw(rng))

    # Cancellation happens after one of the first four steps, uniformly.
    cancel_after = rng.randrange(4) if outcome == "cancelled" else -1

    def maybe_cancel(step: int) -> bool:
        if step != cancel_after:
            return False
        add("OrderCancelled", _after(rng, at, 60, 6 * 3600),
            reason=rng.choice(_CANCEL_REASONS) if rng.random() < 0.8 else None)
        return True

    if maybe_cancel(0):
        return facts
    at = _after(rng, at, 2, 120)
    if outcome == "inventory_failed":
        add("InventoryReservationFailed", at, reason=rng.choice(_STOCK_REASONS))
        return facts
    add("InventoryReserved", at)
    if maybe_cancel(1):
        return facts
    at = _after(rng, at, 5, 600)
    if outcome == "payment_failed":
        add("PaymentFailed", at, reason=rng.choice(_PAYMENT_REASONS))
        return facts
    add("PaymentSucceeded", at, amount=total if rng.random() < 0.9 else None,
        payment_id=f"pay-{rng.getrandbits(48):012x}")
    if maybe_cancel(2):
        return facts
    carrier = rng.choice(CARRIERS)
    at = _after(rng, at, 1800, 12 * 3600)
    add("ShippingScheduled", at, carrier=carrier if rng.random() < 0.9 else None,
        eta=_after(rng, at, 2 * 86400, 6 * 86400) if rng.random() < 0.8 else None)
    if maybe_cancel(3):
        return facts
    at = add("OrderShipped", _after(rng, at, 2 * 3600, 36 * 3600),
             tracking_number=f"{carrier[:2].upper()}{rng.getrandbits(40):013d}", carrier=carrier)
    at = add("OrderDelivered", _after(rng, at, 12 * 3600, 5 * 86400))
    if outcome == "refunded":
        partial = rng.random() < 0.4
        amount = (total * Decimal(rng.randint(10, 90)) / 100).quantize(_CENT) if partial else (
            total if rng.random() < 0.5 else None  # None: a full refund without amount
        )
        add("PaymentRefunded", _after(rng, at, 86400, 20 * 86400), amount=amount)
    return facts
