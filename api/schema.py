"""Assembles the GraphQL schema from the types under api/types/."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from api.execution import ApiExtension, ApiSchema
from api.types import customer as customer_t
from api.types import daily_sales as daily_sales_t
from api.types import dead_letter as dead_letter_t
from api.types import order as order_t
from api.types import order_status_change as order_status_change_t
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


@strawberry.type(description=(
    "Live changes over WebSocket (graphql-transport-ws or graphql-ws). A subscriber receives the "
    "latest state of each matching row at least once after each change; when changes come faster "
    "than it reads, intermediate states of a row are skipped (newest state per row)."))
class Subscription:
    order_updated = strawberry.subscription(
        resolver=order_t.order_updated,
        description="Orders as they change; with `orderId`, its current state first. No argument: "
                    "every order the viewer may see (a customer: its own).")
    order_status_changed = strawberry.subscription(
        resolver=order_status_change_t.order_status_changed,
        description="Orders whose status changed, optionally only to the given statuses.")
    daily_sales_updated = strawberry.subscription(
        resolver=daily_sales_t.daily_sales_updated,
        description="Days as their sales change; with `day`, its current figures first (admins only).")
    projection_progress = strawberry.subscription(
        resolver=projection_status_t.projection_progress,
        description="Each projection's status now, then whenever it changes, about once a second "
                    "at most (admins only).")


schema = ApiSchema(
    query=Query,
    subscription=Subscription,
    config=StrawberryConfig(scalar_map=SCALARS),
    # A class: strawberry makes one per operation.
    extensions=[ApiExtension],
)
