"""The internal event value every decoded message becomes.

Decoding (``projector.contracts``) turns raw Kafka records into either an
:class:`Event` or a :class:`Rejection`; folds (``projector.projections``) only
ever see :class:`Event`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EVENT_TYPES: tuple[str, ...] = (
    "OrderPlaced",
    "OrderCancelled",
    "InventoryReserved",
    "InventoryReservationFailed",
    "PaymentSucceeded",
    "PaymentFailed",
    "PaymentRefunded",
    "ShippingScheduled",
    "OrderShipped",
    "OrderDelivered",
)

# Default topic of each event type. Routing is by event_type, never by topic:
# this table only tells producers (and the simulator) where each type goes.
TOPIC_OF: Mapping[str, str] = {
    "OrderPlaced": "orders.order.placed",
    "OrderCancelled": "orders.order.cancelled",
    "InventoryReserved": "inventory.order.reserved",
    "InventoryReservationFailed": "inventory.order.failed",
    "PaymentSucceeded": "payment.order.succeeded",
    "PaymentFailed": "payment.order.failed",
    "PaymentRefunded": "payment.order.refunded",
    "ShippingScheduled": "shipping.order.scheduled",
    "OrderShipped": "shipping.order.shipped",
    "OrderDelivered": "shipping.order.delivered",
}

DEFAULT_TOPICS: tuple[str, ...] = tuple(TOPIC_OF[t] for t in EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event, normalised to the current schema version.

    ``payload`` holds the type's fields (flat, without the envelope), with money
    as :class:`decimal.Decimal` and item lists as tuples of dicts.
    ``occurred_at`` is a timezone-aware UTC datetime.
    """

    event_id: str
    event_type: str
    order_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    schema_version: int = 1
    correlation_id: str | None = None
    causation_id: str | None = None
    producer: str | None = None


class RejectReason(enum.StrEnum):
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_VERSION = "unsupported_version"
    KEY_MISMATCH = "key_mismatch"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    # Set by the engine, not the decoder: the projection code raised on this event.
    PROJECTION_ERROR = "projection_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that could not become an Event; it keeps the raw bytes."""

    reason: RejectReason
    detail: str
    raw: bytes
    key: bytes | None = None
    event_type: str | None = None
