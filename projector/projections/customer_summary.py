"""The ``customer_summary`` read model: per-customer totals over their orders.

Maintained from deltas: the planner sums, per customer, each changed order's
new contribution minus its old one, and :func:`upsert_sql` adds the sums.
``first_order_at``/``last_order_at`` are a min and a max, which a delta cannot
undo: the upsert takes LEAST/GREATEST, and when an order's contribution moves
(its ``placed_at`` or ``customer_id`` changed: a second OrderPlaced won) the
planner flags the customers involved for :func:`recompute` from
``order_summary``.

An order counts once its OrderPlaced is known: ``order_count`` 1,
``paid_order_count`` 1 if paid, ``cancelled_order_count`` 1 if cancelled,
``total_spent`` = ``paid_amount`` (if paid) - ``refunded_amount``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from projector.projections import _rows
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident
from projector.projections.order_summary import MONEY, ZERO, OrderRow


class Vector(NamedTuple):
    """An order's additive contribution to its customer's row."""

    order_count: int
    paid_order_count: int
    cancelled_order_count: int
    total_spent: Decimal


class Summary(NamedTuple):
    """A whole ``customer_summary`` row's values (without key and updated_seq)."""

    order_count: int
    paid_order_count: int
    cancelled_order_count: int
    total_spent: Decimal
    first_order_at: datetime
    last_order_at: datetime


# tuple.__new__ builds the NamedTuple without its generated Python __new__ (see order_summary).
_new = tuple.__new__


def contribution(row: OrderRow) -> dict[str, Vector]:
    """``{customer_id: vector}``, empty until the order's OrderPlaced is known."""
    if row.placed_at is None or row.customer_id is None:
        return {}
    paid = row.paid_at is not None
    spent = MONEY.subtract(row.paid_amount if paid else ZERO, row.refunded_amount)
    return {row.customer_id: _new(Vector, (1, int(paid), int(row.cancelled_at is not None), spent))}


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``customer_summary`` under ``table``."""
    t = quote_ident(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "    customer_id text PRIMARY KEY,\n"
        "    order_count bigint NOT NULL,\n"
        "    paid_order_count bigint NOT NULL,\n"
        "    cancelled_order_count bigint NOT NULL,\n"
        "    total_spent numeric NOT NULL,\n"
        "    first_order_at timestamptz,\n"
        "    last_order_at timestamptz,\n"
        "    updated_seq bigint NOT NULL\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'spent_idx')} "
        f"ON {t} (total_spent DESC, customer_id)",
    ]


_VALUES = ", ".join(_rows.fields(("text", "int8", "int8", "int8", "numeric", "timestamptz", "timestamptz")))


@functools.lru_cache(maxsize=64)
def upsert_sql(table: str, param: int = 1) -> str:
    """The upsert adding :func:`upsert_rows`, given as jsonb parameter ``$param``."""
    return (
        f"INSERT INTO {quote_ident(table)} AS t (customer_id, order_count, paid_order_count, "
        "cancelled_order_count, total_spent, first_order_at, last_order_at, updated_seq) "
        f"SELECT {_VALUES}, nextval('{UPDATED_SEQ}') FROM jsonb_array_elements(${param}::jsonb) AS r "
        "ON CONFLICT (customer_id) DO UPDATE SET "
        "order_count = t.order_count + excluded.order_count, "
        "paid_order_count = t.paid_order_count + excluded.paid_order_count, "
        "cancelled_order_count = t.cancelled_order_count + excluded.cancelled_order_count, "
        "total_spent = t.total_spent + excluded.total_spent, "
        # LEAST/GREATEST ignore NULLs: a delta without new orders keeps the bounds.
        "first_order_at = LEAST(t.first_order_at, excluded.first_order_at), "
        "last_order_at = GREATEST(t.last_order_at, excluded.last_order_at), "
        "updated_seq = excluded.updated_seq"
    )


@functools.lru_cache(maxsize=64)
def _recompute_sql(table: str, orders_table: str) -> str:
    # Both parts read the same snapshot and touch disjoint rows: customers left
    # with no order are deleted, the others get exact bounds.
    t = quote_ident(table)
    return (
        f"WITH gone AS (DELETE FROM {t} WHERE customer_id = ANY($1::text[]) "
        "AND order_count = 0 RETURNING customer_id), "
        "bounds AS (SELECT customer_id, min(placed_at) AS first_at, max(placed_at) AS last_at "
        f"FROM {quote_ident(orders_table)} WHERE customer_id = ANY($1::text[]) "
        "AND placed_at IS NOT NULL GROUP BY customer_id) "
        f"UPDATE {t} AS t SET first_order_at = b.first_at, last_order_at = b.last_at, "
        f"updated_seq = nextval('{UPDATED_SEQ}') FROM bounds AS b "
        "WHERE t.customer_id = b.customer_id AND t.customer_id NOT IN (SELECT customer_id FROM gone) "
        "AND (t.first_order_at, t.last_order_at) IS DISTINCT FROM (b.first_at, b.last_at)"
    )


def upsert_rows(
    deltas: Mapping[str, Vector], placed: Mapping[str, tuple[datetime, datetime]]
) -> list[tuple[Any, ...]]:
    """The rows :func:`upsert_sql` adds, keys in sorted order: ``deltas``, and bounds widened
    by ``placed`` (min, max placed_at of newly counted orders)."""
    zero = Vector(0, 0, 0, ZERO)
    rows = []
    for key in sorted(deltas.keys() | placed.keys()):
        bounds = placed.get(key)
        rows.append((key, *deltas.get(key, zero), *(bounds or (None, None))))
    return rows


async def recompute(
    conn: Any, table: str, orders_table: str, customer_ids: Sequence[str]
) -> bool:
    """Set exact first/last order times of ``customer_ids`` from ``orders_table``.

    The rare path, after the upsert; also drops customers left with no
    order. Returns whether it ran. Every customer flagged by the planner also
    got a delta or bounds, so the upsert already holds its row lock:
    another instance's new order of that customer is either committed, hence
    seen here, or waits and widens the bounds with GREATEST/LEAST afterwards.
    """
    if not customer_ids:
        return False
    await conn.execute(_recompute_sql(table, orders_table), list(customer_ids))
    return True
