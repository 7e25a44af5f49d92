"""DailySales: one row of daily_sales; the `dailySales` query; the `dailySalesUpdated` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from api.context import ApiInfo, Context
from api.errors import ApiError, Forbidden
from api.fanout import PUSH_STARTED, Subscriber, Watch
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


async def daily_sales_updated(
    info: ApiInfo,
    day: Annotated[date | None, strawberry.argument(description="Only this day (UTC).")] = None,
) -> AsyncIterator[DailySales]:
    """Days as their sales change (admins only). With ``day``, its current figures come
    first, if it had orders."""
    ctx = info.context
    if not ctx.viewer.is_admin:
        raise Forbidden("`dailySalesUpdated` is for admins only")
    live = ctx.require_live()
    return _day_updates(ctx, live.registry.subscribe(Watch(daily_sales.DAILY_SALES, "dailySalesUpdated",
                                                           key=day)))


async def _day_updates(ctx: Context, subscription: Any) -> AsyncGenerator[DailySales, None]:
    sub: Subscriber
    with subscription as sub:
        if isinstance(sub.watch.key, date):
            row = await daily_sales.by_day(ctx.db, sub.watch.key)
            if row is not None:
                sub.floor = row["updated_seq"]
                PUSH_STARTED.set(None)
                yield DailySales.from_row(row)
        async for change in sub.changes():
            yield DailySales.from_row(change.row)
