"""The ``orders`` projection: order_summary and the aggregates derived from it.

Deciding and doing are apart. :func:`plan` (pure) folds a batch into the
current order rows and computes, per aggregate table, the summed difference
between each changed order's new and old contribution. Duplicates and
reorderings change no order row, so they cannot double-count.
:class:`OrdersProjection` loads, plans and writes, one set-based statement per
table.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from projector.errors import TransientError
from projector.events import Event
from projector.projection import Positioned
from projector.projections import customer_summary, daily_sales, order_summary, product_sales
from projector.projections.order_summary import MONEY, OrderRow, fold_all
from projector.projections.row_cache import RowCache

ORDER_SUMMARY = "order_summary"
CUSTOMER_SUMMARY = "customer_summary"
PRODUCT_SALES = "product_sales"
DAILY_SALES = "daily_sales"

# A lost insert race is settled in one extra round (the reload locks the rows).
_MAX_WRITE_ROUNDS = 3

# The event types whose winners the contribution functions read (placed_at,
# customer_id, items, paid_at, paid_amount, cancelled_at, refunds). Other
# events cannot move an aggregate, and most events are of those other types.
_MOVES_AGGREGATES = frozenset({"OrderPlaced", "PaymentSucceeded", "PaymentRefunded", "OrderCancelled"})

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
    # Callers hold MONEY as the decimal context, so + and - on money are exact.
    for key, vector in contrib.items():
        total = acc.get(key)
        if total is None:
            acc[key] = list(vector) if sign > 0 else [-x for x in vector]
        elif sign > 0:
            acc[key] = [a + b for a, b in zip(total, vector, strict=True)]
        else:
            acc[key] = [a - b for a, b in zip(total, vector, strict=True)]


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
    by_order: dict[str, list[Event]] = {}
    for event in events:
        by_order.setdefault(event.order_id, []).append(event)
    with decimal.localcontext(MONEY):
        return _plan(current, by_order)


def _plan(current: Mapping[str, OrderRow], by_order: Mapping[str, list[Event]]) -> OrdersPlan:
    rows: list[OrderRow] = []
    customers: dict[str, list[Any]] = {}
    products: dict[str, list[Any]] = {}
    days: dict[date, list[Any]] = {}
    bounds: dict[str, tuple[datetime, datetime]] = {}
    recompute: set[str] = set()
    for order_id in sorted(by_order):
        old = current.get(order_id)
        batch = by_order[order_id]
        new = fold_all(old, batch)
        if new is old:
            continue
        rows.append(new)
        if new.placed_at is None:
            continue  # no OrderPlaced yet: it contributes nothing, before or after
        prior = old if old is not None and old.placed_at is not None else None
        if prior is not None and not any(e.event_type in _MOVES_AGGREGATES for e in batch):
            continue
        _diff(customers, customer_summary.contribution, prior, new)
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
    return OrdersPlan(
        rows=tuple(rows),
        customers=_nonzero(customers, customer_summary.Vector),
        customer_bounds=bounds,
        products=_nonzero(products, product_sales.Vector),
        days=_nonzero(days, daily_sales.Vector),
        recompute_customers=tuple(sorted(recompute)),
    )


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


class OrdersProjection:
    """Projection ``orders``: order_summary, customer_summary, product_sales, daily_sales."""

    name: str = "orders"
    version: int = 1
    tables: tuple[str, ...] = (ORDER_SUMMARY, CUSTOMER_SUMMARY, PRODUCT_SALES, DAILY_SALES)

    def __init__(self, cache_rows: int = 20_000) -> None:
        """``cache_rows``: order rows kept in memory between batches, ~4 KB each
        (see :class:`~projector.projections.row_cache.RowCache`); 0 disables the cache."""
        self.cache: RowCache[OrderRow] = RowCache(cache_rows)

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        """CREATE statements (tables, then indexes) for the physical names of the four tables."""
        statements = [
            *order_summary.ddl(physical[ORDER_SUMMARY]),
            *customer_summary.ddl(physical[CUSTOMER_SUMMARY]),
            *product_sales.ddl(physical[PRODUCT_SALES]),
            *daily_sales.ddl(physical[DAILY_SALES]),
        ]
        return sorted(statements, key=lambda s: not s.startswith("CREATE TABLE"))

    async def apply(
        self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]
    ) -> set[str]:
        """Fold ``batch`` into the four tables; returns the logical names changed.

        Statements: one locking load of the batch's orders, one order_summary
        upsert, one upsert per aggregate table with a delta, and rarely a
        customer recompute or a delete of emptied aggregate rows.
        """
        events = [p.event for p in batch]
        if not events:
            return set()
        orders_table = physical[ORDER_SUMMARY]
        current = await order_summary.load(
            conn, orders_table, sorted({e.order_id for e in events}), self.cache
        )
        decided = plan(current, events)
        lost = await order_summary.write(conn, orders_table, decided.rows, self.cache)
        rounds = 1
        while lost:
            # Another instance inserted these orders after our load: lock them
            # now, re-plan the batch against them and write those rows again.
            if rounds >= _MAX_WRITE_ROUNDS:
                raise TransientError(
                    f"order_summary: rows {lost[:5]} kept changing under "
                    f"{rounds} write rounds; retry the batch"
                )
            current.update(await order_summary.load(conn, orders_table, lost, self.cache))
            decided = plan(current, events)
            retry = set(lost)
            lost = await order_summary.write(
                conn, orders_table, [r for r in decided.rows if r.order_id in retry], self.cache
            )
            rounds += 1

        changed: set[str] = set()
        if decided.rows:
            changed.add(ORDER_SUMMARY)
        customers_table = physical[CUSTOMER_SUMMARY]
        if await customer_summary.apply_deltas(
            conn, customers_table, decided.customers, decided.customer_bounds
        ):
            changed.add(CUSTOMER_SUMMARY)
        if await customer_summary.recompute(
            conn, customers_table, orders_table, decided.recompute_customers
        ):
            changed.add(CUSTOMER_SUMMARY)
        if await product_sales.apply_deltas(conn, physical[PRODUCT_SALES], decided.products):
            changed.add(PRODUCT_SALES)
        if await daily_sales.apply_deltas(conn, physical[DAILY_SALES], decided.days):
            changed.add(DAILY_SALES)
        return changed
