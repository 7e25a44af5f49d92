"""The ``order_summary`` read model: one row per order, folded from its events.

Events of one order arrive on different topics and partitions in any
interleaving, and any event may be delivered more than once. The row is
therefore a join-semilattice: its state is (the set of applied event ids, the
*winning* event of each type, the refunds by event id, the latest
``occurred_at``), each part merged by a commutative, idempotent rule, and every
visible column is derived from that state. Any interleaving, with any
duplication, gives the same row.

Status lattice
--------------
``status`` is the highest rank among the event types applied::

    PLACED < INVENTORY_RESERVED < FAILED < PAID < SHIPPING_SCHEDULED
           < SHIPPED < DELIVERED < CANCELLED < REFUNDED

================================  ====================
event type                        status
================================  ====================
OrderPlaced                       PLACED
InventoryReserved                 INVENTORY_RESERVED
InventoryReservationFailed        FAILED
PaymentFailed                     FAILED
PaymentSucceeded                  PAID
ShippingScheduled                 SHIPPING_SCHEDULED
OrderShipped                      SHIPPED
OrderDelivered                    DELIVERED
OrderCancelled                    CANCELLED
PaymentRefunded                   REFUNDED
================================  ====================

A later stage never regresses status; FAILED sits below PAID so that a payment
retried after a failure ends PAID. A row first created by another event than
OrderPlaced (say PaymentSucceeded) gets that event's status, and what it
carries; the order's own fields stay unknown until OrderPlaced arrives.

Merge rules
-----------
- Duplicates: an event whose ``event_id`` is already in ``event_ids`` changes
  nothing. ``event_ids`` is kept sorted; ``event_count`` is its length.
- The winning event of a type is the one with the least
  ``(occurred_at, event_id)``. Its ``occurred_at`` is the stage timestamp
  (``placed_at``, ``inventory_reserved_at``, ``paid_at``,
  ``shipping_scheduled_at``, ``shipped_at``, ``delivered_at``, ``cancelled_at``,
  ``refunded_at``), i.e. the earliest event of the type; ``failed_at`` is the
  earliest InventoryReservationFailed or PaymentFailed. A type whose winner
  gives only its time (InventoryReserved, OrderDelivered, PaymentRefunded)
  keeps no winning id: which of two simultaneous events won changes nothing.
- Attributes come from the winning event of their type: ``customer_id``,
  ``items``, ``total_amount``, ``currency`` from OrderPlaced;
  ``tracking_number`` from OrderShipped; ``carrier`` from OrderShipped when it
  has one, else from ShippingScheduled.
- ``failure_reason`` is the reason of the winning event of the highest failure
  type present: OrderCancelled > PaymentFailed > InventoryReservationFailed.
  An absent or empty reason reads ``cancelled``, ``payment_failed`` or
  ``inventory_reservation_failed``.
- ``paid_amount`` is the winning PaymentSucceeded's ``amount``; without one, the
  order's ``total_amount`` if OrderPlaced is known, else 0. It is 0 while no
  payment succeeded. It is derived, so a later OrderPlaced fills it in.
- ``refunded_amount`` is the sum over distinct PaymentRefunded events of their
  ``amount``; a refund without an amount refunds the full ``paid_amount`` (as
  derived from the final state, so arrival order does not matter).
- ``item_count`` is the total quantity over ``items``; ``last_event_at`` the
  latest ``occurred_at``.
- Money is exact: Decimal arithmetic in a 100-digit context that traps
  rounding, ``numeric`` columns, and decimal *strings* inside jsonb.
- The merge state (:class:`MergeState`) is the winners and the refund sum, so
  a row can be reloaded and merged further. ``projector.projections.order_store``
  stores it as the columns plus a small ``merge_state`` jsonb holding only what
  the columns do not show (see there).

An ``event_id`` names one immutable event: two deliveries with the same id are
the same event, and only the first one applied is read.
"""

from __future__ import annotations

import decimal
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from projector.errors import InternalError
from projector.events import Event

ZERO = Decimal(0)

# Money arithmetic goes through this context, never the thread's default one
# (28 digits): contract amounts have up to 30 digits, and PostgreSQL's numeric
# is exact. Rounding would make the fold disagree with SQL sums, so it traps.
MONEY = decimal.Context(
    prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero]
)

STATUSES: tuple[str, ...] = (
    "PLACED",
    "INVENTORY_RESERVED",
    "FAILED",
    "PAID",
    "SHIPPING_SCHEDULED",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
    "REFUNDED",
)

STATUS_OF: Mapping[str, str] = {
    "OrderPlaced": "PLACED",
    "InventoryReserved": "INVENTORY_RESERVED",
    "InventoryReservationFailed": "FAILED",
    "PaymentFailed": "FAILED",
    "PaymentSucceeded": "PAID",
    "ShippingScheduled": "SHIPPING_SCHEDULED",
    "OrderShipped": "SHIPPED",
    "OrderDelivered": "DELIVERED",
    "OrderCancelled": "CANCELLED",
    "PaymentRefunded": "REFUNDED",
}

_RANK_OF_TYPE: Mapping[str, int] = {t: STATUSES.index(s) for t, s in STATUS_OF.items()}


class LineItem(NamedTuple):
    """One line of an order; ``unit_price`` may be unknown."""

    sku: str
    qty: int
    unit_price: Decimal | None


# The value types below are NamedTuples rather than frozen dataclasses: they
# are built for every changed order of every batch, and a frozen dataclass's
# __init__ (one object.__setattr__ per field) costs ~7x more for OrderRow's 25.


class Winner(NamedTuple):
    """The winning (least ``(occurred_at, event_id)``) event of one type.

    ``attrs`` holds only the fields the derivation reads, already typed (money
    as Decimal, items as a tuple of :class:`LineItem`, plus ``items_json``, the
    ``items`` column, encoded once when OrderPlaced wins). ``event_id`` is ""
    for the types in :data:`TIME_ONLY`.
    """

    occurred_at: datetime
    event_id: str
    attrs: Mapping[str, Any]


class MergeState(NamedTuple):
    """Everything the columns are derived from; never mutated after creation."""

    winners: Mapping[str, Winner]
    refunded: Decimal
    """The sum of the refund amounts given explicitly."""
    full_refunds: int
    """Refunds without an amount: each refunds the full paid amount."""


class OrderRow(NamedTuple):
    """One ``order_summary`` row (without ``updated_seq``, which the database assigns)."""

    order_id: str
    customer_id: str | None
    status: str
    items: tuple[LineItem, ...]
    item_count: int
    total_amount: Decimal | None
    currency: str | None
    placed_at: datetime | None
    inventory_reserved_at: datetime | None
    failed_at: datetime | None
    paid_at: datetime | None
    shipping_scheduled_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    refunded_at: datetime | None
    failure_reason: str | None
    carrier: str | None
    tracking_number: str | None
    paid_amount: Decimal
    refunded_amount: Decimal
    last_event_at: datetime
    event_count: int
    event_ids: tuple[str, ...]
    merge_state: MergeState


# --- the fold ---------------------------------------------------------------


def _money(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    # The decoder hands us Decimals; anything else is converted exactly via str.
    return Decimal(str(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _items(value: Any) -> tuple[LineItem, ...]:
    if not value:
        return ()
    return tuple(
        LineItem(str(i["sku"]), int(i["qty"]), _money(i.get("unit_price"))) for i in value
    )


def items_json(items: Sequence[LineItem]) -> str:
    """The ``items`` column: ``[{"sku", "qty", "unit_price": "12.50" | null}, ...]``."""
    # Money as a string, not a JSON number: exact, whatever reads the jsonb.
    return orjson.dumps([
        {"sku": i.sku, "qty": i.qty, "unit_price": None if i.unit_price is None else str(i.unit_price)}
        for i in items
    ]).decode()


def placed_attrs(
    customer_id: str | None, items: tuple[LineItem, ...], total: Decimal | None, currency: str | None
) -> Mapping[str, Any]:
    """An OrderPlaced winner's attrs (also rebuilt from the stored columns)."""
    # items_json and item_count are functions of items, kept here so that a
    # row does not encode or count its items again on every later event.
    return {"customer_id": customer_id, "items": items, "items_json": items_json(items),
            "item_count": sum(i.qty for i in items), "total_amount": total, "currency": currency}


_NO_ATTRS: Mapping[str, Any] = {}


def _placed_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return placed_attrs(_text(p.get("customer_id")), _items(p.get("items")),
                        _money(p.get("total_amount")), _text(p.get("currency")))


def _reason_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"reason": _text(p.get("reason"))}


def _payment_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"amount": _money(p.get("amount"))}


def _scheduled_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"carrier": _text(p.get("carrier"))}


def _shipped_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"tracking_number": _text(p.get("tracking_number")), "carrier": _text(p.get("carrier"))}


def _no_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return _NO_ATTRS


# The per-type handlers: what a winning event of the type contributes.
# PaymentRefunded's amount goes to MergeState.refunded instead (every refund counts).
HANDLERS: Mapping[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "OrderPlaced": _placed_attrs,
    "OrderCancelled": _reason_attrs,
    "InventoryReserved": _no_attrs,
    "InventoryReservationFailed": _reason_attrs,
    "PaymentSucceeded": _payment_attrs,
    "PaymentFailed": _reason_attrs,
    "PaymentRefunded": _no_attrs,
    "ShippingScheduled": _scheduled_attrs,
    "OrderShipped": _shipped_attrs,
    "OrderDelivered": _no_attrs,
}

# tuple.__new__ with the fields in order builds a NamedTuple without its
# generated Python __new__, which for OrderRow costs more than the rest of derive.
_new = tuple.__new__

TIME_ONLY = frozenset(t for t, h in HANDLERS.items() if h is _no_attrs)
"""Types whose winner contributes only its ``occurred_at``: no id is kept."""


def fold(row: OrderRow | None, event: Event) -> OrderRow:
    """Merge one event into an order's row (``None``: the order is new).

    Pure, idempotent (an applied ``event_id`` returns ``row`` itself) and
    commutative over distinct events. Raises :class:`InternalError` for an
    event type without a handler or an event of another order.
    """
    return fold_all(row, (event,))


def fold_all(row: OrderRow | None, events: Iterable[Event]) -> OrderRow:
    """Merge many events of one order at once; same result as folding one by one.

    Derives the columns once at the end, which is what makes batches cheap.
    Returns ``row`` itself (the same object) when every event was already applied.
    """
    if row is None:
        order_id: str | None = None
        ids: list[str] = []
        winners: dict[str, Winner] = {}
        refunded, full_refunds = ZERO, 0
        last: datetime | None = None
    else:
        order_id = row.order_id
        ids = list(row.event_ids)  # sorted, and kept sorted by insertion
        winners = dict(row.merge_state.winners)
        refunded, full_refunds = row.merge_state.refunded, row.merge_state.full_refunds
        last = row.last_event_at
    changed = False
    for event in events:
        event_id = event.event_id
        at_id = bisect_left(ids, event_id)
        if at_id < len(ids) and ids[at_id] == event_id:
            continue
        event_type = event.event_type
        handler = HANDLERS.get(event_type)
        if handler is None:
            raise InternalError(
                f"fold: no handler for event_type {event_type!r} (event_id={event_id!r})"
            )
        if order_id is None:
            order_id = event.order_id
        elif event.order_id != order_id:
            raise InternalError(
                f"fold: event {event_id!r} of order {event.order_id!r} folded into {order_id!r}"
            )
        ids.insert(at_id, event_id)
        changed = True
        at = event.occurred_at
        if last is None or at > last:
            last = at
        key = "" if handler is _no_attrs else event_id
        current = winners.get(event_type)
        if current is None or (at, key) < (current.occurred_at, current.event_id):
            winners[event_type] = _new(Winner, (at, key, handler(event.payload)))
        if event_type == "PaymentRefunded":
            amount = _money(event.payload.get("amount"))
            if amount is None:
                full_refunds += 1
            else:
                refunded = MONEY.add(refunded, amount)
    if not changed:
        if row is None:
            raise InternalError("fold_all: no event to create an order row from")
        return row
    assert order_id is not None and last is not None  # set by the first new event
    return derive(order_id, _new(MergeState, (winners, refunded, full_refunds)), tuple(ids), last)


def derive(
    order_id: str, state: MergeState, event_ids: tuple[str, ...], last_event_at: datetime
) -> OrderRow:
    """Compute every column from the merge state (the only place rules live)."""
    w = state.winners
    if not w:
        raise InternalError(f"derive: order {order_id!r} has no winning event")
    get = w.get
    placed = get("OrderPlaced")
    paid = get("PaymentSucceeded")
    scheduled = get("ShippingScheduled")
    shipped = get("OrderShipped")
    inventory_failed = get("InventoryReservationFailed")
    payment_failed = get("PaymentFailed")
    cancelled = get("OrderCancelled")

    if placed is not None:
        pa = placed.attrs
        items: tuple[LineItem, ...] = pa["items"]
        total: Decimal | None = pa["total_amount"]
    else:
        pa, items, total = _NO_ATTRS, (), None

    if paid is None:
        paid_amount = ZERO
    else:
        paid_with = paid.attrs["amount"]
        paid_amount = paid_with if paid_with is not None else (total if total is not None else ZERO)
    refunded = state.refunded
    if state.full_refunds:
        refunded = MONEY.add(refunded, MONEY.multiply(paid_amount, state.full_refunds))

    failure_reason: str | None = None
    if cancelled is not None:
        failure_reason = cancelled.attrs["reason"] or "cancelled"
    elif payment_failed is not None:
        failure_reason = payment_failed.attrs["reason"] or "payment_failed"
    elif inventory_failed is not None:
        failure_reason = inventory_failed.attrs["reason"] or "inventory_reservation_failed"
    if inventory_failed is None:
        failed_at = None if payment_failed is None else payment_failed.occurred_at
    elif payment_failed is None:
        failed_at = inventory_failed.occurred_at
    else:
        failed_at = min(inventory_failed.occurred_at, payment_failed.occurred_at)
    carrier = shipped.attrs["carrier"] if shipped is not None else None
    if carrier is None and scheduled is not None:
        carrier = scheduled.attrs["carrier"]
    delivered = get("OrderDelivered")
    reserved = get("InventoryReserved")
    first_refund = get("PaymentRefunded")

    return _new(OrderRow, (
        order_id,
        pa.get("customer_id"),
        STATUSES[max(map(_RANK_OF_TYPE.__getitem__, w))],
        items,
        pa.get("item_count", 0),
        total,
        pa.get("currency"),
        None if placed is None else placed.occurred_at,
        None if reserved is None else reserved.occurred_at,
        failed_at,
        None if paid is None else paid.occurred_at,
        None if scheduled is None else scheduled.occurred_at,
        None if shipped is None else shipped.occurred_at,
        None if delivered is None else delivered.occurred_at,
        None if cancelled is None else cancelled.occurred_at,
        None if first_refund is None else first_refund.occurred_at,
        failure_reason,
        carrier,
        None if shipped is None else shipped.attrs["tracking_number"],
        paid_amount,
        refunded,
        last_event_at,
        len(event_ids),
        event_ids,
        state,
    ))

