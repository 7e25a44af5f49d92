"""Reads of ``daily_sales``: one day, a range of days."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg

from api.db import ReadDb, Sql, table

DAILY_SALES = "daily_sales"

COLUMNS = "day, orders_placed, orders_paid, orders_cancelled, revenue"

_BY_DAY = Sql(f"SELECT {COLUMNS}, updated_seq FROM {table(DAILY_SALES)} WHERE day = $1", (DAILY_SALES,))
_BETWEEN = Sql(
    f"SELECT {COLUMNS} FROM {table(DAILY_SALES)} "
    "WHERE day BETWEEN $1 AND $2 ORDER BY day", (DAILY_SALES,))


async def between(db: ReadDb, first: date, last: date) -> Sequence[asyncpg.Record]:
    """Days from ``first`` to ``last`` inclusive that had sales, in order."""
    return await db.fetch(_BETWEEN, first, last)


async def by_day(db: ReadDb, day: date) -> asyncpg.Record | None:
    """One day with its ``updated_seq`` (for a subscription's first message), or None."""
    return await db.fetchrow(_BY_DAY, day)
