"""The ``orders`` projection: order_summary and the aggregates derived from it.

Deciding and doing are apart. :func:`~projector.projections.orders_plan.plan`
(pure) folds a batch into the current order rows and computes, per aggregate
table, the summed difference between each changed order's new and old
contribution. Duplicates and reorderings change no order row, so they cannot
double-count. :class:`OrdersProjection` loads, plans and writes, one set-based statement per
table. The order rows are written compare-and-set against the version they
were folded from (``order_store``), so each delta is exact even when another
instance wrote the same order meanwhile.
"""

from __future__ import annotations

import asyncio
import decimal
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from projector.errors import TransientError
from projector.events import Event
from projector.projection import Ahead, Positioned
from projector.projections import _rows, customer_summary, daily_sales, order_store, product_sales
from projector.projections.order_summary import MONEY, OrderRow
from projector.projections.orders_plan import OrdersPlan, Planner, group_by_order, plan_grouped
from projector.projections.row_cache import RowCache

ORDER_SUMMARY = "order_summary"
CUSTOMER_SUMMARY = "customer_summary"
PRODUCT_SALES = "product_sales"
DAILY_SALES = "daily_sales"

# A lost compare-and-set is settled in one extra round: the reload locks the rows.
_MAX_WRITE_ROUNDS = 3
# Orders folded between two yields to the event loop while a batch is prepared ahead
# (~2 ms): the batch committing meanwhile waits no longer than that for its turn.
_SLICE = 128

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


@dataclass(slots=True)
class _Prepared:
    """A batch folded and its order rows encoded, before its transaction."""

    by_order: dict[str, list[Event]]
    current: dict[str, OrderRow]
    expected: dict[str, str | None]
    unknown: list[str]  # orders the cache could not vouch for: read in the transaction
    planner: Planner  # the other orders, planned
    encoded: order_store.Encoded


def _from_table(order_ids: Sequence[str], stored: Mapping[str, OrderRow],
                current: dict[str, OrderRow], expected: dict[str, str | None]) -> None:
    """Fold ``order_ids`` into the rows the table holds (``stored``; absent: new orders)."""
    for order_id in order_ids:
        row = stored.get(order_id)
        if row is None:
            current.pop(order_id, None)
            expected[order_id] = None
        else:
            current[order_id] = row
            expected[order_id] = order_store.fingerprint(row)


class OrdersProjection:
    """Projection ``orders``: order_summary, customer_summary, product_sales, daily_sales."""

    name: str = "orders"
    version: int = 1
    tables: tuple[str, ...] = (ORDER_SUMMARY, CUSTOMER_SUMMARY, PRODUCT_SALES, DAILY_SALES)

    def __init__(self, cache_rows: int = 5_000) -> None:
        """``cache_rows``: order rows kept in memory between batches, ~3 KB each
        (see :class:`~projector.projections.row_cache.RowCache`); 0 disables the cache."""
        self.cache: RowCache[OrderRow] = RowCache(cache_rows)
        self._ahead: Ahead[_Prepared] = Ahead()
        # The orders of the batch prepared last (by physical table): new to the cache
        # but maybe not to the table, if that batch is still being written.
        self._previous: tuple[str, set[str]] = ("", set())

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        """CREATE statements (tables, then indexes) for the physical names of the four tables."""
        statements = [
            *order_store.ddl(physical[ORDER_SUMMARY]),
            *customer_summary.ddl(physical[CUSTOMER_SUMMARY]),
            *product_sales.ddl(physical[PRODUCT_SALES]),
            *daily_sales.ddl(physical[DAILY_SALES]),
        ]
        return sorted(statements, key=lambda s: not s.startswith("CREATE TABLE"))

    async def prepare(self, batch: Sequence[Positioned], physical: Mapping[str, str]) -> None:
        """Fold and encode ``batch`` while the batch before it commits (see
        :class:`~projector.projection.Preparing`), as far as the row cache allows:
        the orders it cannot vouch for are read and folded by :meth:`apply`.

        It yields to the event loop every few orders, so that the statements of the
        batch before go on. The rows planned go to the row cache now, so that the
        next batch, prepared before this one commits, folds into them. Every write
        is compare-and-set, so a row cached here that is not written (this batch
        fails, or loses the row to another writer) costs a reload, never a wrong row.
        """
        if not batch:
            return
        prepared = await self._prepare(batch, physical, yielding=True)
        table = physical[ORDER_SUMMARY]
        for row, fingerprint, _ in prepared.encoded.rows:
            self.cache.put(table, row.order_id, fingerprint, row)
        self._ahead.put(batch, physical, prepared)

    async def apply(
        self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]
    ) -> set[str]:
        """Fold ``batch`` into the four tables; returns the logical names changed.

        Statements: a load of the batch's orders the row cache cannot vouch
        for (except those with an OrderPlaced: assumed new), one order_summary
        write, one statement upserting the deltas of the three aggregate tables,
        and rarely a customer recompute, a delete of emptied aggregate rows, or
        a locked reload and second write of orders another transaction wrote
        meanwhile.
        """
        if not batch:
            return set()
        orders_table = physical[ORDER_SUMMARY]
        cache = self.cache
        # Taken from ahead or made here, the preparation is this call's alone to change.
        prepared = self._ahead.take(batch, physical)
        ahead = prepared is not None
        if prepared is None:
            prepared = await self._prepare(batch, physical, yielding=False)
        by_order, current, expected = prepared.by_order, prepared.current, prepared.expected
        planner, encoded = prepared.planner, prepared.encoded
        if prepared.unknown:
            # Read in the transaction: it sees what the batch before committed.
            stored = await order_store.load(conn, orders_table, prepared.unknown)
            _from_table(prepared.unknown, stored, current, expected)
            with decimal.localcontext(MONEY):
                more = planner.add(current, by_order, prepared.unknown)
            if more:
                encoded = order_store.merged(encoded, order_store.encode(more, expected))
        decided = planner.result()
        # Rows prepared ahead were cached then: an older copy must not replace what
        # the next batch, prepared meanwhile, made of them.
        lost = await order_store.write_encoded(conn, orders_table, encoded, cache,
                                               only=set(prepared.unknown) if ahead else None)
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
            _from_table(lost, await order_store.load(conn, orders_table, lost, lock=True),
                        current, expected)
            with decimal.localcontext(MONEY):
                decided = plan_grouped(current, by_order)
            retry = set(lost)
            lost = await order_store.write(
                conn, orders_table, [r for r in decided.rows if r.order_id in retry], expected, cache
            )
            rounds += 1

        changed = await _write_aggregates(conn, physical, decided)
        if decided.rows:
            changed.add(ORDER_SUMMARY)
        return changed

    async def _prepare(self, batch: Sequence[Positioned], physical: Mapping[str, str],
                       yielding: bool) -> _Prepared:
        """The batch folded into the rows the cache holds (and new orders) and
        encoded; the other orders are left ``unknown``, for :meth:`apply` to read.
        ``yielding``: let the event loop run between slices of orders."""
        table = physical[ORDER_SUMMARY]
        by_order = group_by_order(p.event for p in batch)
        current: dict[str, OrderRow] = {}
        expected: dict[str, str | None] = {}
        unknown: list[str] = []
        known: list[str] = []
        ids = sorted(by_order)
        cached = self.cache.lookup(table, ids)
        previous = self._previous[1] if self._previous[0] == table else set()
        for order_id in ids:
            events = by_order[order_id]
            hit = cached.get(order_id)
            if hit is not None:
                fingerprint, row = hit
                applied = row.event_ids
                # A cached copy is checked by the write's compare-and-set, but
                # a row that already has every event of the batch is not
                # written: if a rolled-back transaction left that copy, its
                # events would be skipped. Such (rare) rows are read instead.
                if any(e.event_id not in applied for e in events):
                    current[order_id] = row
                    expected[order_id] = fingerprint
                    known.append(order_id)
                    continue
            elif order_id not in previous and any(e.event_type == "OrderPlaced" for e in events):
                # Most likely a new order (OrderPlaced usually comes first): written
                # without a read. Should the table have it, the insert leaves it
                # alone and the write returns it as lost: locked, reloaded, folded again.
                # Not if the batch before has it: that one may not have written it yet.
                expected[order_id] = None
                known.append(order_id)
                continue
            unknown.append(order_id)
        self._previous = (table, set(by_order))
        planner = Planner()
        encoded = order_store.Encoded([], {})
        for at in range(0, len(known), _SLICE):
            with decimal.localcontext(MONEY):
                rows = planner.add(current, by_order, known[at:at + _SLICE])
            order_store.encode_into(encoded, rows, expected)
            if yielding:
                await asyncio.sleep(0)
        return _Prepared(by_order, current, expected, unknown, planner, encoded)
