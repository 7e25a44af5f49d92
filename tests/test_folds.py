"""Table-driven tests of the pure order fold, its merge rules and contributions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from readmodels import stored_form

from projector.errors import InternalError
from projector.events import EVENT_TYPES, Event
from projector.projections import by_name, customer_summary, daily_sales, order_store, product_sales
from projector.projections.order_summary import (
    STATUS_OF,
    STATUSES,
    LineItem,
    OrderRow,
    fold,
    fold_all,
)
from projector.projections.orders_plan import plan, totals

D = Decimal
T0 = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)

_ids = iter(range(1_000_000))


def ev(
    event_type: str, minute: int = 0, event_id: str | None = None, order_id: str = "o-1", **payload: Any
) -> Event:
    """An event ``minute`` minutes after T0, with a fresh id unless one is given."""
    return Event(
        event_id=event_id or f"e-{next(_ids):06d}",
        event_type=event_type,
        order_id=order_id,
        occurred_at=T0 + timedelta(minutes=minute),
        payload={"order_id": order_id, **payload},
    )


def placed(minute: int = 0, event_id: str | None = None, **overrides: Any) -> Event:
    payload: dict[str, Any] = {
        "customer_id": "c-1",
        "items": (
            {"sku": "A", "qty": 2, "unit_price": D("1.50")},
            {"sku": "B", "qty": 1, "unit_price": None},
        ),
        "total_amount": D("10.00"),
        "currency": "EUR",
    }
    payload.update(overrides)
    return ev("OrderPlaced", minute, event_id, **payload)


def run(*events: Event) -> OrderRow:
    row: OrderRow | None = None
    for event in events:
        row = fold(row, event)
    assert row is not None
    return row


# --- each type alone ----------------------------------------------------------

STAGE_OF: dict[str, str] = {
    "OrderPlaced": "placed_at",
    "InventoryReserved": "inventory_reserved_at",
    "InventoryReservationFailed": "failed_at",
    "PaymentSucceeded": "paid_at",
    "PaymentFailed": "failed_at",
    "PaymentRefunded": "refunded_at",
    "ShippingScheduled": "shipping_scheduled_at",
    "OrderShipped": "shipped_at",
    "OrderDelivered": "delivered_at",
    "OrderCancelled": "cancelled_at",
}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_alone_creates_a_row_with_its_status_and_stage(event_type: str) -> None:
    event = placed(5) if event_type == "OrderPlaced" else ev(event_type, 5, reason="r")
    row = fold(None, event)
    assert row.order_id == "o-1"
    assert row.status == STATUS_OF[event_type]
    assert getattr(row, STAGE_OF[event_type]) == T0 + timedelta(minutes=5)
    assert row.last_event_at == T0 + timedelta(minutes=5)
    assert (row.event_ids, row.event_count) == ((event.event_id,), 1)
    others = set(STAGE_OF.values()) - {STAGE_OF[event_type]}
    assert all(getattr(row, stage) is None for stage in others)


def test_order_placed_fields() -> None:
    row = run(placed())
    assert row.customer_id == "c-1"
    assert row.items == (LineItem("A", 2, D("1.50")), LineItem("B", 1, None))
    assert row.item_count == 3
    assert (row.total_amount, row.currency) == (D("10.00"), "EUR")
    assert (row.paid_amount, row.refunded_amount) == (D(0), D(0))
    assert row.failure_reason is None


# --- status lattice -------------------------------------------------------------


def test_status_lattice_order() -> None:
    assert STATUSES == (
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


@pytest.mark.parametrize(
    ("types", "status"),
    [
        (["OrderPlaced", "InventoryReserved"], "INVENTORY_RESERVED"),
        (["InventoryReserved", "OrderPlaced"], "INVENTORY_RESERVED"),
        (["OrderPlaced", "InventoryReservationFailed"], "FAILED"),
        (["OrderPlaced", "InventoryReserved", "PaymentFailed"], "FAILED"),
        # a payment retried after a failure ends PAID, whatever the arrival order
        (["OrderPlaced", "PaymentFailed", "PaymentSucceeded"], "PAID"),
        (["OrderPlaced", "PaymentSucceeded", "PaymentFailed"], "PAID"),
        (["PaymentSucceeded", "OrderPlaced"], "PAID"),
        (["OrderDelivered", "OrderShipped", "OrderPlaced"], "DELIVERED"),
        (["OrderPlaced", "PaymentSucceeded", "ShippingScheduled"], "SHIPPING_SCHEDULED"),
        (["OrderPlaced", "PaymentSucceeded", "OrderShipped", "OrderCancelled"], "CANCELLED"),
        (["OrderCancelled", "OrderDelivered"], "CANCELLED"),
        (["PaymentRefunded", "OrderCancelled", "OrderPlaced"], "REFUNDED"),
    ],
)
def test_status_is_the_highest_rank_applied(types: list[str], status: str) -> None:
    events = [placed(i) if t == "OrderPlaced" else ev(t, i, reason="r") for i, t in enumerate(types)]
    assert run(*events).status == status
    assert run(*reversed(events)).status == status


# --- merge rules ------------------------------------------------------------------

MERGE_CASES: list[tuple[str, Sequence[Event], str, Any]] = [
    (
        "earliest OrderPlaced wins its attributes",
        [placed(5, customer_id="late"), placed(1, customer_id="early", currency="USD")],
        "customer_id",
        "early",
    ),
    (
        "placed_at is the earliest OrderPlaced",
        [placed(5), placed(1)],
        "placed_at",
        T0 + timedelta(minutes=1),
    ),
    (
        "ties on occurred_at go to the least event_id",
        [placed(3, "e-b", customer_id="b"), placed(3, "e-a", customer_id="a")],
        "customer_id",
        "a",
    ),
    (
        "last_event_at is the latest event",
        [ev("OrderDelivered", 9), placed(1), ev("InventoryReserved", 4)],
        "last_event_at",
        T0 + timedelta(minutes=9),
    ),
    (
        "failed_at is the earliest failure of either kind",
        [ev("PaymentFailed", 7, reason="card"), ev("InventoryReservationFailed", 3, reason="stock")],
        "failed_at",
        T0 + timedelta(minutes=3),
    ),
    (
        "carrier from ShippingScheduled alone",
        [ev("ShippingScheduled", 1, carrier="DHL")],
        "carrier",
        "DHL",
    ),
    (
        "OrderShipped's carrier wins over ShippingScheduled's",
        [
            ev("OrderShipped", 2, carrier="UPS", tracking_number="T1"),
            ev("ShippingScheduled", 1, carrier="DHL"),
        ],
        "carrier",
        "UPS",
    ),
    (
        "OrderShipped without carrier keeps ShippingScheduled's",
        [ev("ShippingScheduled", 1, carrier="DHL"), ev("OrderShipped", 2, tracking_number="T1")],
        "carrier",
        "DHL",
    ),
    (
        "tracking number of the earliest OrderShipped",
        [ev("OrderShipped", 4, tracking_number="T2"), ev("OrderShipped", 2, tracking_number="T1")],
        "tracking_number",
        "T1",
    ),
    (
        "cancel reason beats payment failure",
        [ev("PaymentFailed", 1, reason="card"), ev("OrderCancelled", 2, reason="customer")],
        "failure_reason",
        "customer",
    ),
    (
        "cancel without reason",
        [ev("InventoryReservationFailed", 1, reason="stock"), ev("OrderCancelled", 2)],
        "failure_reason",
        "cancelled",
    ),
    (
        "payment failure beats inventory failure",
        [ev("PaymentFailed", 5, reason="card"), ev("InventoryReservationFailed", 1, reason="stock")],
        "failure_reason",
        "card",
    ),
    (
        "reason of the earliest event of the type",
        [ev("PaymentFailed", 5, reason="late"), ev("PaymentFailed", 1, reason="early")],
        "failure_reason",
        "early",
    ),
    (
        "failure_reason stays after a successful retry",
        [placed(0), ev("PaymentFailed", 1, reason="card"), ev("PaymentSucceeded", 2)],
        "failure_reason",
        "card",
    ),
    (
        "paid_amount from PaymentSucceeded.amount",
        [placed(0), ev("PaymentSucceeded", 1, amount=D("9.99"))],
        "paid_amount",
        D("9.99"),
    ),
    (
        "paid_amount of the winning payment",
        [placed(0), ev("PaymentSucceeded", 3, amount=D("2")), ev("PaymentSucceeded", 1, amount=D("1"))],
        "paid_amount",
        D("1"),
    ),
    (
        "paid_amount defaults to total_amount",
        [placed(0), ev("PaymentSucceeded", 1)],
        "paid_amount",
        D("10.00"),
    ),
    (
        "paid_amount is 0 while the total is unknown",
        [ev("PaymentSucceeded", 1)],
        "paid_amount",
        D(0),
    ),
    (
        "paid_amount is derived again when OrderPlaced arrives after the payment",
        [ev("PaymentSucceeded", 1), placed(0)],
        "paid_amount",
        D("10.00"),
    ),
    (
        "paid_amount is 0 without a successful payment",
        [placed(0), ev("PaymentFailed", 1, reason="card")],
        "paid_amount",
        D(0),
    ),
    (
        "refunded_at is the earliest refund",
        [ev("PaymentRefunded", 8, amount=D("1")), ev("PaymentRefunded", 6, amount=D("1"))],
        "refunded_at",
        T0 + timedelta(minutes=6),
    ),
]


@pytest.mark.parametrize(
    ("events", "field", "expected"), [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES]
)
def test_merge_rules(events: Sequence[Event], field: str, expected: Any) -> None:
    assert getattr(run(*events), field) == expected
    assert run(*reversed(events)) == run(*events)


# --- refunds and money --------------------------------------------------------------

REFUND_CASES: list[tuple[str, Sequence[Event], Decimal]] = [
    (
        "partial",
        [placed(0), ev("PaymentSucceeded", 1), ev("PaymentRefunded", 2, amount=D("3.25"))],
        D("3.25"),
    ),
    (
        "two partial",
        [
            placed(0),
            ev("PaymentSucceeded", 1),
            ev("PaymentRefunded", 2, amount=D("3")),
            ev("PaymentRefunded", 3, amount=D("4.5")),
        ],
        D("7.5"),
    ),
    (
        "full: no amount means the paid amount",
        [placed(0), ev("PaymentSucceeded", 1), ev("PaymentRefunded", 2)],
        D("10.00"),
    ),
    (
        "full refund before the order and the payment are known",
        [ev("PaymentRefunded", 3), ev("PaymentSucceeded", 2), placed(0)],
        D("10.00"),
    ),
    (
        "full refund of an explicit payment amount",
        [ev("PaymentRefunded", 3), ev("PaymentSucceeded", 2, amount=D("8.00")), placed(0)],
        D("8.00"),
    ),
    (
        "decimals are exact",
        [ev("PaymentRefunded", 2, amount=D("0.1")), ev("PaymentRefunded", 3, amount=D("0.2"))],
        D("0.3"),
    ),
]


@pytest.mark.parametrize(
    ("events", "refunded"), [c[1:] for c in REFUND_CASES], ids=[c[0] for c in REFUND_CASES]
)
def test_refunded_amount(events: Sequence[Event], refunded: Decimal) -> None:
    assert run(*events).refunded_amount == refunded
    assert str(run(*reversed(events)).refunded_amount) == str(refunded)


def test_money_is_exact_beyond_the_default_decimal_context() -> None:
    # 30 significant digits: the default context (28) would round these.
    big = D("12345678901234567890.0000000001")
    row = run(
        placed(0, total_amount=big, items=({"sku": "A", "qty": 3, "unit_price": big},)),
        ev("PaymentSucceeded", 1),
        ev("PaymentRefunded", 2, amount=D("0.0000000001")),
    )
    assert row.refunded_amount == D("0.0000000001")
    assert customer_summary.contribution(row)["c-1"].total_spent == D("12345678901234567890")
    assert product_sales.contribution(row)["A"].revenue == D("37037036703703703670.0000000003")


# --- identity, idempotence, errors ----------------------------------------------------


def test_duplicate_event_returns_the_same_row() -> None:
    event = placed(0)
    row = fold(None, event)
    assert fold(row, event) is row
    assert fold_all(row, [event, event]) is row
    again = fold(row, replace(event, payload={**event.payload, "customer_id": "other"}))
    assert again is row  # an event id names one immutable event


def test_payment_before_placement_creates_a_partial_row() -> None:
    paid = ev("PaymentSucceeded", 2, amount=D("7"))
    row = fold(None, paid)
    assert (row.status, row.customer_id, row.items, row.total_amount) == ("PAID", None, (), None)
    assert (row.paid_at, row.paid_amount, row.item_count) == (T0 + timedelta(minutes=2), D("7"), 0)
    later = fold(row, placed(0))
    assert (later.status, later.customer_id, later.placed_at) == ("PAID", "c-1", T0)
    assert later.event_ids == tuple(sorted({paid.event_id, *later.event_ids}))


def test_fold_all_equals_folding_one_by_one() -> None:
    events = [placed(0), ev("PaymentSucceeded", 1), ev("PaymentRefunded", 2), ev("OrderCancelled", 3)]
    assert fold_all(None, events) == run(*events)
    assert fold_all(run(*events[:2]), events[1:]) == run(*events)


def test_unknown_type_and_foreign_order_raise_internal_error() -> None:
    with pytest.raises(InternalError, match="no handler for event_type 'Nope'"):
        fold(None, ev("Nope"))
    with pytest.raises(InternalError, match="of order 'o-2' folded into 'o-1'"):
        fold(run(placed()), ev("OrderDelivered", order_id="o-2"))


def test_stored_form_rebuilds_the_row() -> None:
    """The columns plus the slim merge_state (order_store) give back the row, state included."""
    row = run(
        placed(0),
        ev("PaymentSucceeded", 1, amount=D("10.00")),
        ev("PaymentRefunded", 2, amount=None),
        ev("PaymentRefunded", 3, amount=D("0.10")),
        ev("OrderShipped", 4, carrier="UPS", tracking_number="T\"1"),
        ev("ShippingScheduled", 4, carrier="DHL"),
        ev("PaymentFailed", 5, reason="card"),
        ev("InventoryReservationFailed", 6),
        ev("OrderCancelled", 7),
        ev("OrderDelivered", 8),
        ev("InventoryReserved", 9),
    )
    assert order_store.from_stored(stored_form(row)) == row
    failed = run(ev("PaymentFailed", 1))
    assert order_store.from_stored(stored_form(failed)) == failed


# --- contributions ---------------------------------------------------------------------


def test_no_contribution_before_order_placed() -> None:
    row = run(ev("PaymentSucceeded", 1, amount=D("5")), ev("PaymentRefunded", 2))
    assert customer_summary.contribution(row) == {}
    assert product_sales.contribution(row) == {}
    assert daily_sales.contribution(row) == {}


def test_contributions_of_a_paid_partly_refunded_cancelled_order() -> None:
    row = run(
        placed(0, items=(
            {"sku": "A", "qty": 2, "unit_price": D("1.50")},
            {"sku": "B", "qty": 1, "unit_price": None},
            {"sku": "A", "qty": 1, "unit_price": D("2.00")},
        )),
        ev("PaymentSucceeded", 1),
        ev("PaymentRefunded", 2, amount=D("0.1")),
        ev("PaymentRefunded", 3, amount=D("0.2")),
        ev("OrderCancelled", 4),
    )
    assert customer_summary.contribution(row) == {"c-1": customer_summary.Vector(1, 1, 1, D("9.70"))}
    assert product_sales.contribution(row) == {
        "A": product_sales.Vector(3, 3, D("5.00"), 1),  # a repeated SKU is summed
        "B": product_sales.Vector(1, 1, D(0), 1),  # unknown unit price: no revenue
    }
    # T0 is 23:00 UTC on March 1st; the day is the UTC date of placed_at.
    assert daily_sales.contribution(row) == {date(2024, 3, 1): daily_sales.Vector(1, 1, 1, D("9.70"))}


def test_unpaid_order_contributes_counts_only() -> None:
    row = run(placed(0))
    assert customer_summary.contribution(row) == {"c-1": customer_summary.Vector(1, 0, 0, D(0))}
    assert product_sales.contribution(row)["A"] == product_sales.Vector(2, 0, D(0), 1)


# --- the planner -------------------------------------------------------------------------


def test_plan_skips_duplicates_and_unchanged_rows() -> None:
    first = placed(0)
    decided = plan({}, [first, first, ev("PaymentSucceeded", 1)])
    assert len(decided.rows) == 1
    assert decided.customers == {"c-1": customer_summary.Vector(1, 1, 0, D("10.00"))}
    assert decided.customer_bounds == {"c-1": (T0, T0)}
    assert decided.recompute_customers == ()
    current = {r.order_id: r for r in decided.rows}
    again = plan(current, [first])
    assert (again.rows, again.customers, again.products, again.days) == ((), {}, {}, {})


def test_plan_leaves_aggregates_alone_for_events_that_move_nothing() -> None:
    current = {r.order_id: r for r in plan({}, [placed(0)]).rows}
    decided = plan(current, [ev("InventoryReserved", 1), ev("ShippingScheduled", 2, carrier="DHL")])
    assert len(decided.rows) == 1
    assert (decided.customers, decided.customer_bounds, decided.products, decided.days) == ({}, {}, {}, {})


def test_plan_flags_customers_when_an_earlier_order_placed_moves_the_order() -> None:
    current = {r.order_id: r for r in plan({}, [placed(60 * 24, customer_id="c-late")]).rows}
    decided = plan(current, [placed(0, customer_id="c-early", items=({"sku": "Z", "qty": 1},))])
    assert decided.recompute_customers == ("c-early", "c-late")
    assert decided.customers["c-late"].order_count == -1
    assert decided.customers["c-early"].order_count == 1
    assert decided.products["A"].order_count == -1 and decided.products["Z"].order_count == 1
    assert decided.days[date(2024, 3, 2)].orders_placed == -1
    assert decided.days[date(2024, 3, 1)].orders_placed == 1


def test_totals_are_the_sum_of_contributions() -> None:
    rows = [
        run(placed(0, event_id="a1", customer_id="c"), ev("PaymentSucceeded", 1, order_id="o-1")),
        fold(None, replace(placed(60, customer_id="c"), order_id="o-2")),
    ]
    t = totals(rows)
    assert t.customers == {
        "c": customer_summary.Summary(2, 1, 0, D("10.00"), T0, T0 + timedelta(minutes=60))
    }
    assert t.products["A"] == product_sales.Vector(4, 2, D("3.00"), 2)
    assert t.days == {
        date(2024, 3, 1): daily_sales.Vector(1, 1, 0, D("10.00")),
        date(2024, 3, 2): daily_sales.Vector(1, 0, 0, D(0)),
    }


def test_projections_registry() -> None:
    registry = by_name()
    assert set(registry) == {"orders", "timeline"}
    assert registry["orders"].tables == ("order_summary", "customer_summary", "product_sales", "daily_sales")
    assert registry["timeline"].tables == ("order_timeline",)
    assert all(p.version == 1 for p in registry.values())
    statements = registry["orders"].ddl({t: f"s_{t}" for t in registry["orders"].tables})
    assert all('"s_' in s for s in statements)
    kinds = [s.split(" ")[1] for s in statements]
    assert kinds == sorted(kinds, key=lambda k: k != "TABLE")  # tables first
