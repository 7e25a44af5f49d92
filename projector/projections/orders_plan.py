"""Planning a batch of the ``orders`` projection: pure, no I/O.

:func:`plan` folds a batch into the current order rows and computes, per
aggregate table, the summed difference between each changed order's new and
old contribution; :func:`totals` is the invariant those deltas keep. Apart from
the projection (``orders``), so that it can be compiled (see ``projector.native``).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from projector.events import Event
from projector.projections import customer_summary, daily_sales, product_sales
from projector.projections.order_summary import MONEY, OrderRow, fold_all

# The event types whose winners the contribution functions read: 1 for
# customer_summary and daily_sales (placed_at, customer_id, paid_at,
# paid_amount, cancelled_at, refunds), 2 for product_sales as well (placed_at,
# items, paid_at). Other events cannot move an aggregate, and most events are
# of those other types.
_MOVES: Mapping[str, int] = {
    "OrderPlaced": 3, "PaymentSucceeded": 3, "PaymentRefunded": 1, "OrderCancelled": 1,
}

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class OrdersPlan:
    """What one batch changes. Keys of every mapping have a nonzero delta."""

    rows: tuple[OrderRow, ...]
    """Changed order rows, sorted by order_id."""
    customers: Mapping[str, customer_summary.Vector]
    customer_bounds: Mapping[str, tuple[datetime, datetime]]
    """(min, max) placed_at of orders newly counted for a customer (LEAST/GREATEST)."""
    products: Mapping[str, product_sales.Vector]
    days: Mapping[date, daily_sales.Vector]
    recompute_customers: tuple[str, ...]
    """Customers an order's contribution moved away from or within: exact first/last."""


def _accumulate(acc: dict[K, list[Any]], contrib: Mapping[K, Any], sign: int) -> None:
    # Every contribution vector has four fields. Callers hold MONEY as the
    # decimal context, so + and - on money are exact. In place: the lists are ours.
    for key, (a, b, c, d) in contrib.items():
        total = acc.get(key)
        if total is None:
            acc[key] = [a, b, c, d] if sign > 0 else [-a, -b, -c, -d]
        elif sign > 0:
            total[0] += a
            total[1] += b
            total[2] += c
            total[3] += d
        else:
            total[0] -= a
            total[1] -= b
            total[2] -= c
            total[3] -= d


def _diff(
    acc: dict[K, list[Any]],
    contribution: Callable[[OrderRow], Mapping[K, Any]],
    old: OrderRow | None,
    new: OrderRow,
) -> None:
    new_c = contribution(new)
    old_c = contribution(old) if old is not None else {}
    if new_c != old_c:  # e.g. a retried payment leaves every aggregate as it was
        _accumulate(acc, new_c, 1)
        _accumulate(acc, old_c, -1)


def _nonzero(acc: Mapping[K, list[Any]], make: Callable[..., V]) -> dict[K, V]:
    return {key: make(*vector) for key, vector in acc.items() if any(vector)}


def plan(current: Mapping[str, OrderRow], events: Sequence[Event]) -> OrdersPlan:
    """Fold ``events`` into ``current`` (existing rows by order_id) and sum the deltas.

    Pure. Orders not in ``current`` are new. Events already applied to a row
    are ignored; the result does not depend on the order of ``events``.
    """
    with decimal.localcontext(MONEY):
        return plan_grouped(current, group_by_order(events))


def group_by_order(events: Iterable[Event]) -> dict[str, list[Event]]:
    """``events`` by order_id, each order's in the given order."""
    by_order: dict[str, list[Event]] = {}
    for event in events:
        events_of = by_order.get(event.order_id)
        if events_of is None:
            by_order[event.order_id] = [event]
        else:
            events_of.append(event)
    return by_order


def plan_grouped(current: Mapping[str, OrderRow], by_order: Mapping[str, list[Event]]) -> OrdersPlan:
    """:func:`plan` of events already grouped by order; the caller holds MONEY as the decimal context."""
    planner = Planner()
    planner.add(current, by_order, sorted(by_order))
    return planner.result()


class Planner:
    """:func:`plan_grouped` in parts: orders planned a few at a time (:meth:`add`), the
    plan of all of them at the end (:meth:`result`). The caller holds MONEY as the
    decimal context while it adds."""

    def __init__(self) -> None:
        self.rows: list[OrderRow] = []
        self._customers: dict[str, list[Any]] = {}
        self._products: dict[str, list[Any]] = {}
        self._days: dict[date, list[Any]] = {}
        self._bounds: dict[str, tuple[datetime, datetime]] = {}
        self._recompute: set[str] = set()
        self._in_order = True  # rows were added in key order

    def add(self, current: Mapping[str, OrderRow], by_order: Mapping[str, list[Event]],
            order_ids: Sequence[str]) -> list[OrderRow]:
        """Fold the events of ``order_ids`` (sorted) into their ``current`` rows (absent:
        new orders); returns the rows that changed, in key order."""
        rows: list[OrderRow] = []
        customers, products, days = self._customers, self._products, self._days
        bounds, recompute = self._bounds, self._recompute
        for order_id in order_ids:
            old = current.get(order_id)
            batch = by_order[order_id]
            new = fold_all(old, batch)
            if new is old:
                continue
            rows.append(new)
            if new.placed_at is None:
                continue  # no OrderPlaced yet: it contributes nothing, before or after
            prior = old if old is not None and old.placed_at is not None else None
            if prior is None:
                moves = 3
            else:
                moves = 0
                for event in batch:
                    moves |= _MOVES.get(event.event_type, 0)
                if not moves:
                    continue
            _diff(customers, customer_summary.contribution, prior, new)
            if moves & 2:
                _diff(products, product_sales.contribution, prior, new)
            _diff(days, daily_sales.contribution, prior, new)
            if prior is not None:
                if (prior.customer_id, prior.placed_at) == (new.customer_id, new.placed_at):
                    continue
                # A second, earlier OrderPlaced won: a delta cannot undo a min/max.
                recompute.update(c for c in (prior.customer_id, new.customer_id) if c is not None)
            if new.customer_id is not None:
                low, high = bounds.get(new.customer_id, (new.placed_at, new.placed_at))
                bounds[new.customer_id] = (min(low, new.placed_at), max(high, new.placed_at))
        if rows and self.rows and rows[0].order_id < self.rows[-1].order_id:
            self._in_order = False
        self.rows += rows
        return rows

    def result(self) -> OrdersPlan:
        """The plan of every order added."""
        rows = self.rows if self._in_order else sorted(self.rows, key=_order_id)
        return OrdersPlan(
            rows=tuple(rows),
            customers=_nonzero(self._customers, customer_summary.Vector),
            customer_bounds=self._bounds,
            products=_nonzero(self._products, product_sales.Vector),
            days=_nonzero(self._days, daily_sales.Vector),
            recompute_customers=tuple(sorted(self._recompute)),
        )


def _order_id(row: OrderRow) -> str:
    return row.order_id


@dataclass(frozen=True, slots=True)
class Totals:
    """The expected contents of the aggregate tables, by key."""

    customers: Mapping[str, customer_summary.Summary]
    products: Mapping[str, product_sales.Vector]
    days: Mapping[date, daily_sales.Vector]


def totals(rows: Iterable[OrderRow]) -> Totals:
    """The aggregate tables as a pure function of the order rows.

    The invariant the deltas maintain; used by tests and consistency checks.
    """
    with decimal.localcontext(MONEY):
        return _totals(rows)


def _totals(rows: Iterable[OrderRow]) -> Totals:
    customers: dict[str, list[Any]] = {}
    products: dict[str, list[Any]] = {}
    days: dict[date, list[Any]] = {}
    bounds: dict[str, tuple[datetime, datetime]] = {}
    for row in rows:
        _accumulate(customers, customer_summary.contribution(row), 1)
        _accumulate(products, product_sales.contribution(row), 1)
        _accumulate(days, daily_sales.contribution(row), 1)
        if row.placed_at is not None and row.customer_id is not None:
            low, high = bounds.get(row.customer_id, (row.placed_at, row.placed_at))
            bounds[row.customer_id] = (min(low, row.placed_at), max(high, row.placed_at))
    return Totals(
        customers={
            k: customer_summary.Summary(v[0], v[1], v[2], v[3], *bounds[k])
            for k, v in customers.items()
        },
        products={k: product_sales.Vector(*v) for k, v in products.items()},
        days={k: daily_sales.Vector(*v) for k, v in days.items()},
    )
