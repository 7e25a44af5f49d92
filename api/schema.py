"""Assembles the GraphQL schema from the types under api/types/."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from api.execution import ApiExtension, ApiSchema
from api.types import customer as customer_t
from api.types import daily_sales as daily_sales_t
from api.types import dead_letter as dead_letter_t
from api.types import order as order_t
from api.types import product as product_t
from api.types import projection_status as projection_status_t
from api.types.scalars import SCALARS


@strawberry.type
class Query:
    order = strawberry.field(
        resolver=order_t.order,
        description="One order by id; null if it does not exist or the viewer may not see it.")
    orders = strawberry.field(
        resolver=order_t.orders,
        description="Placed orders (those whose OrderPlaced is known), filtered, in pages of at "
                    "most 100: first/after forward, last/before backward.")
    customer = strawberry.field(
        resolver=customer_t.customer,
        description="One customer; null if unknown or not the viewer itself (customers).")
    customers = strawberry.field(
        resolver=customer_t.customers,
        description="Customers in pages of at most 100; a customer viewer sees only itself.")
    product = strawberry.field(resolver=product_t.product, description="One product by SKU.")
    top_products = strawberry.field(
        resolver=product_t.top_products,
        description="The best-selling products by revenue or units ordered (limit 1..100).")
    daily_sales = strawberry.field(
        resolver=daily_sales_t.daily_sales_between,
        description="Days from `from` to `to` (at most 1,000) that had orders; others are absent.")
    projections = strawberry.field(
        resolver=projection_status_t.projections,
        description="Every projection with its state and checkpoints (admins only).")
    dead_letters = strawberry.field(
        resolver=dead_letter_t.dead_letters,
        description="Events set aside by the engine, newest first (admins only).")

schema = ApiSchema(
    query=Query,
    config=StrawberryConfig(scalar_map=SCALARS),
    # A class: strawberry makes one per operation.
    extensions=[ApiExtension],
)
