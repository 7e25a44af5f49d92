"""The ``product_sales`` read model: per-SKU sales totals over orders.

Maintained from deltas (an order's new contribution minus its old one, summed
per SKU over the batch). An order counts once its OrderPlaced is known, once
per distinct SKU in its items (quantities of a repeated SKU are summed):
``units_ordered`` qty, ``order_count`` 1, and once paid ``units_paid`` qty and
``revenue`` qty * unit_price. An item without ``unit_price`` adds no revenue.
Refunds do not reduce ``revenue`` here (they are not itemised).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from projector.projections import _rows
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident
from projector.projections.order_summary import MONEY, ZERO, OrderRow


class Vector(NamedTuple):
    """An order's additive contribution to one SKU's row (also the row's values)."""

    units_ordered: int
    units_paid: int
    revenue: Decimal
    order_count: int


# tuple.__new__ builds the NamedTuple without its generated Python __new__ (see order_summary).
_new = tuple.__new__


def contribution(row: OrderRow) -> dict[str, Vector]:
    """``{sku: vector}`` over the order's distinct SKUs; empty before OrderPlaced."""
    if row.placed_at is None or not row.items:
        return {}
    paid = row.paid_at is not None
    qty: dict[str, int] = {}
    revenue: dict[str, Decimal] = {}
    for item in row.items:
        qty[item.sku] = qty.get(item.sku, 0) + item.qty
        if item.unit_price is not None:
            line = MONEY.multiply(item.qty, item.unit_price)
            revenue[item.sku] = MONEY.add(revenue.get(item.sku, ZERO), line)
    if paid:
        return {sku: _new(Vector, (q, q, revenue.get(sku, ZERO), 1)) for sku, q in qty.items()}
    return {sku: _new(Vector, (q, 0, ZERO, 1)) for sku, q in qty.items()}


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``product_sales`` under ``table``."""
    t = quote_ident(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "    sku text PRIMARY KEY,\n"
        "    units_ordered bigint NOT NULL,\n"
        "    units_paid bigint NOT NULL,\n"
        "    revenue numeric NOT NULL,\n"
        "    order_count bigint NOT NULL,\n"
        "    updated_seq bigint NOT NULL\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'revenue_idx')} "
        f"ON {t} (revenue DESC, sku)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'units_idx')} "
        f"ON {t} (units_ordered DESC, sku)",
    ]


_VALUES = ", ".join(_rows.fields(("text", "int8", "int8", "numeric", "int8")))


@functools.lru_cache(maxsize=64)
def upsert_sql(table: str, param: int = 1) -> str:
    """The upsert adding :func:`upsert_rows`, given as jsonb parameter ``$param``."""
    return (
        f"INSERT INTO {quote_ident(table)} AS t "
        "(sku, units_ordered, units_paid, revenue, order_count, updated_seq) "
        f"SELECT {_VALUES}, nextval('{UPDATED_SEQ}') FROM jsonb_array_elements(${param}::jsonb) AS r "
        "ON CONFLICT (sku) DO UPDATE SET "
        "units_ordered = t.units_ordered + excluded.units_ordered, "
        "units_paid = t.units_paid + excluded.units_paid, "
        "revenue = t.revenue + excluded.revenue, "
        "order_count = t.order_count + excluded.order_count, "
        "updated_seq = excluded.updated_seq"
    )


@functools.lru_cache(maxsize=64)
def delete_empty_sql(table: str) -> str:
    """Deletes the rows of the keys given as ``$1`` that are left with no order."""
    return (
        f"DELETE FROM {quote_ident(table)} WHERE sku = ANY($1::text[]) AND order_count = 0"
    )


def upsert_rows(deltas: Mapping[str, Vector]) -> list[tuple[Any, ...]]:
    """The rows :func:`upsert_sql` adds, keys in sorted order."""
    return [(key, *deltas[key]) for key in sorted(deltas)]


def emptied(deltas: Mapping[str, Vector]) -> list[str]:
    """The keys whose row may be left with no order, for :func:`delete_empty_sql`.

    A sku loses an order when an order's items were replaced by a second, earlier OrderPlaced;
    the aggregate over orders would not have a row for it.
    """
    return sorted(key for key, vector in deltas.items() if vector.order_count < 0)
