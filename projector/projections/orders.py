"""The ``orders`` projection: order_summary and the aggregates derived from it.

Deciding and doing are apart. :func:`plan` (pure) folds a batch into the
current order rows and computes, per aggregate table, the summed difference
between each changed order's new and old contribution. Duplicates and
reorderings change no order row, so they cannot double-count.
:class:`OrdersProjection` loads, plans and writes, one set-based statement per
table. The order rows are written compare-and-set against the version they
were folded from (``order_store``), so each delta is exact even when another
instance wrote the same order meanwhile.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from projector.errors import TransientError
from projector.events import Event
from projector.projection import Positioned
from projector.projections import _rows, customer_summary, daily_sales, order_store, product_sales
from projector.projections.order_summary import MONEY, OrderRow, fold_all
from projector.projections.row_cache import RowCache

ORDER_SUMMARY = "order_summary"
CUSTOMER_SUMMARY = "customer_summary"
PRODUCT_SALES = "product_sales"
DAILY_SALES = "daily_sales"

# A lost compare-and-set is settled in one extra round: the reload locks the rows.
_MAX_WRITE_ROUNDS = 3

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
        return _plan(current, _by_order(events))


def _by_order(events: Iterable[Event]) -> dict[str, list[Event]]:
    by_order: dict[str, list[Event]] = {}
    for event in events:
        events_of = by_order.get(event.order_id)
        if events_of is None:
            by_order[event.order_id] = [event]
        else:
            events_of.append(event)
    return by_order


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


@functools.lru_cache(maxsize=64)
def _aggregates_sql(customers: str, products: str, days: str) -> str:
    # The three upserts in one statement (one round trip), run in this order by the
    # scalar subqueries: every writer locks aggregate rows table by table, each
    # table's keys in sorted order, so concurrent batches wait but never deadlock.
    upserts = (customer_summary.upsert_sql(customers, 1), product_sales.upsert_sql(products, 2),
               daily_sales.upsert_sql(days, 3))
    ctes = ", ".join(f"u{i} AS ({sql} RETURNING 1)" for i, sql in enumerate(upserts))
    return f"WITH {ctes} SELECT " + ", ".join(f"(SELECT count(*) FROM u{i})" for i in range(3))


async def _write_aggregates(conn: Any, physical: Mapping[str, str], decided: OrdersPlan) -> set[str]:
    """Add the plan's deltas to the aggregate tables; returns the logical names changed.

    One statement for the three upserts; then, rarely, a customer recompute and
    deletes of product and day rows left with no order.
    """
    customers = customer_summary.upsert_rows(decided.customers, decided.customer_bounds)
    products = product_sales.upsert_rows(decided.products)
    days = daily_sales.upsert_rows(decided.days)
    changed = {name for name, rows in ((CUSTOMER_SUMMARY, customers), (PRODUCT_SALES, products),
                                       (DAILY_SALES, days)) if rows}
    if changed:
        await conn.execute(
            _aggregates_sql(physical[CUSTOMER_SUMMARY], physical[PRODUCT_SALES], physical[DAILY_SALES]),
            _rows.param(customers), _rows.param(products), _rows.param(days))
    if await customer_summary.recompute(
        conn, physical[CUSTOMER_SUMMARY], physical[ORDER_SUMMARY], decided.recompute_customers
    ):
        changed.add(CUSTOMER_SUMMARY)
    if skus := product_sales.emptied(decided.products):
        await conn.execute(product_sales.delete_empty_sql(physical[PRODUCT_SALES]), skus)
    if dates := daily_sales.emptied(decided.days):
        await conn.execute(daily_sales.delete_empty_sql(physical[DAILY_SALES]), dates)
    return changed


class OrdersProjection:
    """Projection ``orders``: order_summary, customer_summary, product_sales, daily_sales."""

    name: str = "orders"
    version: int = 1
    tables: tuple[str, ...] = (ORDER_SUMMARY, CUSTOMER_SUMMARY, PRODUCT_SALES, DAILY_SALES)

    def __init__(self, cache_rows: int = 10_000) -> None:
        """``cache_rows``: order rows kept in memory between batches, ~3 KB each
        (see :class:`~projector.projections.row_cache.RowCache`); 0 disables the cache."""
        self.cache: RowCache[OrderRow] = RowCache(cache_rows)

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        """CREATE statements (tables, then indexes) for the physical names of the four tables."""
        statements = [
            *order_store.ddl(physical[ORDER_SUMMARY]),
            *customer_summary.ddl(physical[CUSTOMER_SUMMARY]),
            *product_sales.ddl(physical[PRODUCT_SALES]),
            *daily_sales.ddl(physical[DAILY_SALES]),
        ]
        return sorted(statements, key=lambda s: not s.startswith("CREATE TABLE"))

    async def apply(
        self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]
    ) -> set[str]:
        """Fold ``batch`` into the four tables; returns the logical names changed.

        Statements: a load of the batch's orders the row cache cannot vouch
        for (except those with an OrderPlaced: assumed new), one order_summary
        write, one statement upserting the deltas of the three aggregate tables,
        and rarely a customer recompute, a delete of emptied aggregate rows, or a
        locked reload and second write of orders another
        transaction wrote meanwhile.
        """
        if not batch:
            return set()
        orders_table = physical[ORDER_SUMMARY]
        by_order = _by_order(p.event for p in batch)
        current, expected = await self._current(conn, orders_table, by_order)
        with decimal.localcontext(MONEY):
            decided = _plan(current, by_order)
        cache = self.cache
        lost = await order_store.write(conn, orders_table, decided.rows, expected, cache)
        rounds = 1
        while lost:
            # Another transaction wrote these orders since we read them (or
            # never committed the copy we cached): lock them, re-plan the
            # batch against them and write those rows again.
            if rounds >= _MAX_WRITE_ROUNDS:
                raise TransientError(
                    f"order_summary: rows {lost[:5]} kept changing under "
                    f"{rounds} write rounds; retry the batch"
                )
            stored = await order_store.load(conn, orders_table, lost, lock=True)
            for order_id in lost:
                row = stored.get(order_id)
                if row is None:
                    current.pop(order_id, None)
                    expected[order_id] = None
                else:
                    current[order_id] = row
                    expected[order_id] = order_store.fingerprint(row)
            with decimal.localcontext(MONEY):
                decided = _plan(current, by_order)
            retry = set(lost)
            lost = await order_store.write(
                conn, orders_table, [r for r in decided.rows if r.order_id in retry], expected, cache
            )
            rounds += 1

        changed = await _write_aggregates(conn, physical, decided)
        if decided.rows:
            changed.add(ORDER_SUMMARY)
        return changed

    async def _current(
        self, conn: Any, table: str, by_order: Mapping[str, list[Event]]
    ) -> tuple[dict[str, OrderRow], dict[str, str | None]]:
        """The rows the batch's orders are folded into, and the fingerprint of each
        (None: not in the table, or assumed new): from the row cache, else loaded in
        one statement."""
        ids = sorted(by_order)
        cached = self.cache.lookup(table, ids)
        current: dict[str, OrderRow] = {}
        expected: dict[str, str | None] = {}
        missing: list[str] = []
        for order_id in ids:
            hit = cached.get(order_id)
            if hit is not None:
                fingerprint, row = hit
                applied = row.event_ids
                # A cached copy is checked by the write's compare-and-set, but
                # a row that already has every event of the batch is not
                # written: if a rolled-back transaction left that copy, its
                # events would be skipped. Such (rare) rows are read instead.
                if any(e.event_id not in applied for e in by_order[order_id]):
                    current[order_id] = row
                    expected[order_id] = fingerprint
                    continue
            elif any(e.event_type == "OrderPlaced" for e in by_order[order_id]):
                # Most likely a new order (OrderPlaced usually comes first): written
                # without a read. Should the table have it, the insert leaves it
                # alone and the write returns it as lost: locked, reloaded, folded again.
                expected[order_id] = None
                continue
            missing.append(order_id)
        if missing:
            stored = await order_store.load(conn, table, missing)
            for order_id in missing:
                found = stored.get(order_id)
                if found is None:
                    expected[order_id] = None
                else:
                    current[order_id] = found
                    expected[order_id] = order_store.fingerprint(found)
        return current, expected
