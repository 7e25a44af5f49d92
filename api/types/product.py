"""Product: one row of product_sales; the `product` and `topProducts` queries."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry

from api.context import ApiInfo
from api.errors import ApiError
from api.sql import product_sales

MAX_TOP = 100


@strawberry.enum
class ProductRanking(Enum):
    REVENUE = "revenue"
    UNITS = "units"


@strawberry.type(description="Sales of one SKU over all placed orders.")
class Product:
    sku: strawberry.ID
    units_ordered: int
    units_paid: int
    revenue: Decimal
    order_count: int

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Product:
        return cls(sku=r["sku"], units_ordered=r["units_ordered"], units_paid=r["units_paid"],
                   revenue=r["revenue"], order_count=r["order_count"])


async def product(info: ApiInfo, sku: strawberry.ID) -> Product | None:
    row = await product_sales.by_sku(info.context.db, sku)
    return None if row is None else Product.from_row(row)


async def top_products(info: ApiInfo, by: ProductRanking | None = ProductRanking.REVENUE,
                       limit: int | None = 10) -> list[Product]:
    """The best-selling products by revenue or units ordered (limit 1..100)."""
    count = 10 if limit is None else limit
    if not 1 <= count <= MAX_TOP:
        raise ApiError(f"`limit` must be between 1 and {MAX_TOP} (got {count})")
    ranking = (by or ProductRanking.REVENUE).value
    return [Product.from_row(r) for r in await product_sales.top(info.context.db, ranking, count)]
