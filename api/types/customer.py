"""Customer: one row of customer_summary; the `customer` and `customers` queries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader

from api.context import ApiInfo, Context
from api.pagination import window
from api.sql import customer_summary
from api.types.connection import Connection, connection
from api.types.order import Order, OrderStatus, orders_of_customer


@strawberry.enum
class CustomerOrderBy(Enum):
    TOTAL_SPENT_DESC = "TOTAL_SPENT_DESC"
    CUSTOMER_ID_ASC = "CUSTOMER_ID_ASC"


_ORDERINGS = {
    CustomerOrderBy.TOTAL_SPENT_DESC: customer_summary.TOTAL_SPENT_DESC,
    CustomerOrderBy.CUSTOMER_ID_ASC: customer_summary.CUSTOMER_ID_ASC,
}


async def _orders(root: Customer, info: ApiInfo, first: int | None = None, after: str | None = None,
                  status: list[OrderStatus] | None = None) -> Connection[Order]:
    return await orders_of_customer(info, root.customer_id, first, after, status)


@strawberry.type(description="A customer's totals over its placed orders.")
class Customer:
    customer_id: strawberry.ID
    order_count: int
    paid_order_count: int
    cancelled_order_count: int
    total_spent: Decimal = strawberry.field(description="Paid minus refunded.")
    first_order_at: datetime | None
    last_order_at: datetime | None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Customer:
        return cls(customer_id=r["customer_id"], order_count=r["order_count"],
                   paid_order_count=r["paid_order_count"],
                   cancelled_order_count=r["cancelled_order_count"], total_spent=r["total_spent"],
                   first_order_at=r["first_order_at"], last_order_at=r["last_order_at"])
    orders = strawberry.field(
        resolver=_orders,
        description="The customer's placed orders, newest first, in pages of at most 100.")


def customers_by_id(ctx: Context) -> DataLoader[str, Customer | None]:
    """Customers by id, one statement per request; None where not visible."""

    async def load(ids: list[str]) -> list[Customer | None]:
        rows = await customer_summary.by_ids(ctx.db, ctx.viewer, ids)
        return [Customer.from_row(rows[i]) if i in rows else None for i in ids]

    return DataLoader(load)


async def customer(info: ApiInfo, customer_id: strawberry.ID) -> Customer | None:
    """One customer; null if unknown or not the viewer (for a customer viewer)."""
    return await info.context.loader(customers_by_id).load(customer_id)


async def customers(
    info: ApiInfo,
    order_by: CustomerOrderBy | None = CustomerOrderBy.TOTAL_SPENT_DESC,
    first: int | None = None,
    after: str | None = None,
) -> Connection[Customer]:
    """Customers the viewer may see (a customer: itself), paged forward."""
    ordering = _ORDERINGS[order_by or CustomerOrderBy.TOTAL_SPENT_DESC]
    win = window(ordering, first=first, after=after)
    ctx = info.context
    page = await customer_summary.page_of(ctx.db, ctx.viewer, ordering, win)
    return connection(page, ordering, Customer.from_row,
                      lambda: customer_summary.count(ctx.db, ctx.viewer))
