"""Reads of ``product_sales``: one product, and the top products by revenue or units."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from api.db import ReadDb, Sql, table

PRODUCT_SALES = "product_sales"

COLUMNS = "sku, units_ordered, units_paid, revenue, order_count"

_BY_SKU = Sql(f"SELECT {COLUMNS} FROM {table(PRODUCT_SALES)} WHERE sku = $1", (PRODUCT_SALES,))
# Each matches an index: (revenue DESC, sku) and (units_ordered DESC, sku).
_TOP = {
    ranking: Sql(f"SELECT {COLUMNS} FROM {table(PRODUCT_SALES)} "
                 f"ORDER BY {column} DESC, sku LIMIT $1", (PRODUCT_SALES,))
    for ranking, column in (("revenue", "revenue"), ("units", "units_ordered"))
}
RANKINGS = tuple(_TOP)


async def by_sku(db: ReadDb, sku: str) -> asyncpg.Record | None:
    return await db.fetchrow(_BY_SKU, sku)


async def top(db: ReadDb, ranking: str, limit: int) -> Sequence[asyncpg.Record]:
    """The ``limit`` products ranking highest by ``ranking`` (one of RANKINGS)."""
    return await db.fetch(_TOP[ranking], limit)
