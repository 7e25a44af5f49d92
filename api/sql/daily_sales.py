"""Reads of ``daily_sales``: a range of days."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import asyncpg

from api.db import ReadDb, Sql, table

DAILY_SALES = "daily_sales"

_BETWEEN = Sql(
    f"SELECT day, orders_placed, orders_paid, orders_cancelled, revenue FROM {table(DAILY_SALES)} "
    "WHERE day BETWEEN $1 AND $2 ORDER BY day", (DAILY_SALES,))


async def between(db: ReadDb, first: date, last: date) -> Sequence[asyncpg.Record]:
    """Days from ``first`` to ``last`` inclusive that had sales, in order."""
    return await db.fetch(_BETWEEN, first, last)
