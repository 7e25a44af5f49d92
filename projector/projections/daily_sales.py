"""The ``daily_sales`` read model: per-day totals, keyed by the UTC date of ``placed_at``.

Maintained from deltas (an order's new contribution minus its old one, summed
per day over the batch). An order counts once its OrderPlaced is known:
``orders_placed`` 1, ``orders_paid`` 1 if paid, ``orders_cancelled`` 1 if
cancelled, ``revenue`` = ``paid_amount`` (if paid) - ``refunded_amount``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, date
from decimal import Decimal
from typing import Any, NamedTuple

from projector.projections import _rows
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident
from projector.projections.order_summary import MONEY, ZERO, OrderRow


class Vector(NamedTuple):
    """An order's additive contribution to its day's row (also the row's values)."""

    orders_placed: int
    orders_paid: int
    orders_cancelled: int
    revenue: Decimal


# tuple.__new__ builds the NamedTuple without its generated Python __new__ (see order_summary).
_new = tuple.__new__


def contribution(row: OrderRow) -> dict[date, Vector]:
    """``{placed UTC date: vector}``, empty before OrderPlaced."""
    if row.placed_at is None:
        return {}
    paid = row.paid_at is not None
    revenue = MONEY.subtract(row.paid_amount if paid else ZERO, row.refunded_amount)
    day = row.placed_at.astimezone(UTC).date()
    return {day: _new(Vector, (1, int(paid), int(row.cancelled_at is not None), revenue))}


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``daily_sales`` under ``table``.

    ``updated_seq`` is indexed for the API's change feed, which reads the rows
    written since the sequence it last delivered.
    """
    t = quote_ident(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "    day date PRIMARY KEY,\n"
        "    orders_placed bigint NOT NULL,\n"
        "    orders_paid bigint NOT NULL,\n"
        "    orders_cancelled bigint NOT NULL,\n"
        "    revenue numeric NOT NULL,\n"
        "    updated_seq bigint NOT NULL\n"
        ")",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'updated_seq_idx')} ON {t} (updated_seq)",
    ]


_VALUES = ", ".join(_rows.fields(("date", "int8", "int8", "int8", "numeric")))


@functools.lru_cache(maxsize=64)
def upsert_sql(table: str, param: int = 1) -> str:
    """The upsert adding :func:`upsert_rows`, given as jsonb parameter ``$param``."""
    return (
        f"INSERT INTO {quote_ident(table)} AS t "
        "(day, orders_placed, orders_paid, orders_cancelled, revenue, updated_seq) "
        f"SELECT {_VALUES}, nextval('{UPDATED_SEQ}') FROM jsonb_array_elements(${param}::jsonb) AS r "
        "ON CONFLICT (day) DO UPDATE SET "
        "orders_placed = t.orders_placed + excluded.orders_placed, "
        "orders_paid = t.orders_paid + excluded.orders_paid, "
        "orders_cancelled = t.orders_cancelled + excluded.orders_cancelled, "
        "revenue = t.revenue + excluded.revenue, "
        "updated_seq = excluded.updated_seq"
    )


@functools.lru_cache(maxsize=64)
def delete_empty_sql(table: str) -> str:
    """Deletes the rows of the keys given as ``$1`` that are left with no order."""
    return (
        f"DELETE FROM {quote_ident(table)} WHERE day = ANY($1::date[]) AND orders_placed = 0"
    )


def upsert_rows(deltas: Mapping[date, Vector]) -> list[tuple[Any, ...]]:
    """The rows :func:`upsert_sql` adds, keys in sorted order."""
    return [(key, *deltas[key]) for key in sorted(deltas)]


def emptied(deltas: Mapping[date, Vector]) -> list[date]:
    """The keys whose row may be left with no order, for :func:`delete_empty_sql`.

    A day loses an order when an order's placed_at moved to another day;
    the aggregate over orders would not have a row for it.
    """
    return sorted(key for key, vector in deltas.items() if vector.orders_placed < 0)
