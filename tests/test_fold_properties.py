"""Properties of the order fold and the planner: order independence and idempotence.

Whatever the interleaving of an order's events, however often each is
delivered and however the stream is cut into batches, the order rows must be
the same, and the aggregates maintained from the planner's deltas must equal
the aggregates computed from the final rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projector.events import EVENT_TYPES, Event
from projector.projections import customer_summary
from projector.projections.order_summary import MONEY as MONEY_CONTEXT
from projector.projections.order_summary import OrderRow, fold, fold_all
from projector.projections.orders_plan import OrdersPlan, Planner, Totals, plan, plan_grouped, totals

D = Decimal
# Two minutes before midnight: a few minutes of spread move orders across days.
T0 = datetime(2024, 3, 1, 23, 58, tzinfo=UTC)
MONEY = [None, D("0.1"), D("0.2"), D("1.50"), D("10")]

_item = st.fixed_dictionaries(
    {"sku": st.sampled_from("ABC"), "qty": st.integers(1, 3), "unit_price": st.sampled_from(MONEY)}
)
_PAYLOADS: Mapping[str, st.SearchStrategy[dict[str, Any]]] = {
    "OrderPlaced": st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(["c1", "c2", "c3"]),
            "items": st.lists(_item, min_size=1, max_size=3).map(tuple),
            "total_amount": st.sampled_from(MONEY[1:]),
            "currency": st.sampled_from(["EUR", "USD"]),
        }
    ),
    "OrderCancelled": st.fixed_dictionaries({"reason": st.sampled_from([None, "x", "y"])}),
    "InventoryReservationFailed": st.fixed_dictionaries({"reason": st.sampled_from(["x", "y"])}),
    "PaymentFailed": st.fixed_dictionaries({"reason": st.sampled_from(["x", "y"])}),
    "PaymentSucceeded": st.fixed_dictionaries({"amount": st.sampled_from(MONEY)}),
    "PaymentRefunded": st.fixed_dictionaries({"amount": st.sampled_from(MONEY)}),
    "ShippingScheduled": st.fixed_dictionaries({"carrier": st.sampled_from([None, "DHL"])}),
    "OrderShipped": st.fixed_dictionaries(
        {"carrier": st.sampled_from([None, "UPS"]), "tracking_number": st.sampled_from(["T1", "T2"])}
    ),
}


@st.composite
def order_events(draw: st.DrawFn, order_id: str) -> list[Event]:
    """Distinct events of one order; few timestamps, so ties on occurred_at are common."""
    types = draw(st.lists(st.sampled_from(EVENT_TYPES), min_size=1, max_size=9))
    ids = draw(st.permutations(range(len(types))))
    events = []
    for n, event_type in zip(ids, types, strict=True):
        payload = draw(_PAYLOADS[event_type]) if event_type in _PAYLOADS else {}
        minute = draw(st.integers(0, 4))
        events.append(
            Event(
                event_id=f"{order_id}-e{n}",
                event_type=event_type,
                order_id=order_id,
                occurred_at=T0 + timedelta(minutes=minute),
                payload={"order_id": order_id, **payload},
            )
        )
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """(the distinct events of a few orders, one delivery of them: shuffled, with duplicates)."""
    n_orders = draw(st.integers(1, 4))
    events = [e for i in range(n_orders) for e in draw(order_events(f"o{i}"))]
    duplicates = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    stream = draw(st.permutations(events + duplicates))
    return events, list(stream)


def fold_everything(events: Sequence[Event]) -> dict[str, OrderRow]:
    by_order: dict[str, list[Event]] = {}
    for e in events:
        by_order.setdefault(e.order_id, []).append(e)
    return {order_id: fold_all(None, es) for order_id, es in by_order.items()}


@dataclass
class Aggregates:
    """The aggregate tables in memory, updated the way the SQL statements do."""

    customers: dict[str, list[Any]] = field(default_factory=dict)
    products: dict[str, list[Any]] = field(default_factory=dict)
    days: dict[date, list[Any]] = field(default_factory=dict)

    def apply(self, p: OrdersPlan, orders: Mapping[str, OrderRow]) -> None:
        zero = customer_summary.Vector(0, 0, 0, D(0))
        for key in p.customers.keys() | p.customer_bounds.keys():
            row = self.customers.setdefault(key, [0, 0, 0, D(0), None, None])
            for i, x in enumerate(p.customers.get(key, zero)):
                row[i] += x
            bounds = p.customer_bounds.get(key)
            if bounds is not None:  # LEAST / GREATEST, which ignore NULL
                row[4] = bounds[0] if row[4] is None else min(row[4], bounds[0])
                row[5] = bounds[1] if row[5] is None else max(row[5], bounds[1])
        for key in p.recompute_customers:
            row = self.customers[key]
            if row[0] == 0:
                del self.customers[key]
                continue
            placed = [o.placed_at for o in orders.values() if o.customer_id == key and o.placed_at]
            row[4], row[5] = min(placed), max(placed)
        updates: tuple[tuple[dict[Any, list[Any]], Mapping[Any, tuple[Any, ...]], int], ...] = (
            (self.products, p.products, 3),  # order_count
            (self.days, p.days, 0),  # orders_placed
        )
        for table, deltas, count in updates:
            for key, vector in deltas.items():
                row = table.setdefault(key, [0] * len(vector))
                for i, x in enumerate(vector):
                    row[i] += x
                if vector[count] < 0 and row[count] == 0:
                    del table[key]

    def plain(self) -> tuple[dict[Any, tuple[Any, ...]], ...]:
        tables: tuple[dict[Any, list[Any]], ...] = (self.customers, self.products, self.days)
        return tuple({k: tuple(v) for k, v in table.items()} for table in tables)


def as_plain(t: Totals) -> tuple[dict[Any, tuple[Any, ...]], ...]:
    """Compare totals as plain tuples (vector types aside)."""
    return (
        {k: tuple(v) for k, v in t.customers.items()},
        {k: tuple(v) for k, v in t.products.items()},
        {k: tuple(v) for k, v in t.days.items()},
    )


@settings(max_examples=400, deadline=None)
@given(deliveries())
def test_rows_do_not_depend_on_interleaving_or_duplication(case: tuple[list[Event], list[Event]]) -> None:
    events, stream = case
    rows: dict[str, OrderRow] = {}
    for event in stream:
        rows[event.order_id] = fold(rows.get(event.order_id), event)
    assert rows == fold_everything(sorted(events, key=lambda e: e.event_id))
    for row in rows.values():
        assert list(row.event_ids) == sorted(set(row.event_ids))
        assert row.event_count == len(row.event_ids)


@settings(max_examples=400, deadline=None)
@given(deliveries(), st.data())
def test_batches_give_the_same_rows_and_aggregates(
    case: tuple[list[Event], list[Event]], data: st.DataObject
) -> None:
    events, stream = case
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    current: dict[str, OrderRow] = {}
    aggregates = Aggregates()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decided = plan(current, stream[start:end])
        assert [r.order_id for r in decided.rows] == sorted({r.order_id for r in decided.rows})
        current.update((r.order_id, r) for r in decided.rows)
        aggregates.apply(decided, current)
    expected = fold_everything(events)
    assert current == expected
    assert aggregates.plain() == as_plain(totals(expected.values()))


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_replaying_a_whole_stream_changes_nothing(case: tuple[list[Event], list[Event]]) -> None:
    _, stream = case
    decided = plan({}, stream)
    current = {r.order_id: r for r in decided.rows}
    again = plan(current, list(reversed(stream)))
    assert (again.rows, again.customers, again.customer_bounds) == ((), {}, {})
    assert (again.products, again.days, again.recompute_customers) == ({}, {}, ())


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.data())
def test_planning_in_parts_gives_the_plan_of_the_whole(
    case: tuple[list[Event], list[Event]], data: st.DataObject
) -> None:
    """Orders planned a slice at a time, and some last and out of key order (those the
    row cache could not vouch for, read in the transaction), plan as one."""
    _, stream = case
    first = data.draw(st.integers(0, len(stream)))
    current = {r.order_id: r for r in plan({}, stream[:first]).rows}
    by_order: dict[str, list[Event]] = {}
    for event in stream[first:]:
        by_order.setdefault(event.order_id, []).append(event)
    ids = sorted(by_order)
    late = sorted(data.draw(st.sets(st.sampled_from(ids))) if ids else set())
    early = [i for i in ids if i not in late]
    size = data.draw(st.integers(1, 3))
    with localcontext(MONEY_CONTEXT):
        planner = Planner()
        for at in range(0, len(early), size):
            planner.add(current, by_order, early[at:at + size])
        planner.add(current, by_order, late)
        assert planner.result() == plan_grouped(current, by_order)
