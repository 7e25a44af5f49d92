"""DailySales: one row of daily_sales; the `dailySales` query."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from api.context import ApiInfo
from api.errors import ApiError
from api.sql import daily_sales

MAX_DAYS = 1_000


@strawberry.type(description="Orders and revenue of one day (UTC) that had any.")
class DailySales:
    day: date
    orders_placed: int
    orders_paid: int
    orders_cancelled: int
    revenue: Decimal

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> DailySales:
        return cls(day=r["day"], orders_placed=r["orders_placed"], orders_paid=r["orders_paid"],
                   orders_cancelled=r["orders_cancelled"], revenue=r["revenue"])


async def daily_sales_between(
    info: ApiInfo,
    from_: Annotated[date, strawberry.argument(name="from", description="First day, inclusive.")],
    to: Annotated[date, strawberry.argument(description="Last day, inclusive.")],
) -> list[DailySales]:
    """Days from `from` to `to` (at most 1,000 days) that had sales; days without are absent."""
    if to < from_:
        raise ApiError("`to` is before `from`")
    if (to - from_).days >= MAX_DAYS:
        raise ApiError(f"at most {MAX_DAYS} days at a time: narrow `from`..`to`")
    return [DailySales.from_row(r) for r in await daily_sales.between(info.context.db, from_, to)]
