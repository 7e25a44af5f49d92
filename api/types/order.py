"""Order: one row of order_summary; the `order` and `orders` queries; a customer's orders;
the `orderUpdated` subscription."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import strawberry
from strawberry.dataloader import DataLoader

from api.auth import Viewer
from api.context import ApiInfo, Context
from api.errors import Forbidden
from api.fanout import PUSH_STARTED, Subscriber, Watch
from api.pagination import Page, Window, window
from api.sql import order_summary
from api.sql.order_summary import OrderCriteria
from api.types.connection import Connection, connection
from api.types.order_event import OrderEvent, timelines

if TYPE_CHECKING:
    from api.types.customer import Customer


@strawberry.enum(description="Where an order stands; a later stage never goes back.")
class OrderStatus(Enum):
    PLACED = "PLACED"
    INVENTORY_RESERVED = "INVENTORY_RESERVED"
    PAID = "PAID"
    SHIPPING_SCHEDULED = "SHIPPING_SCHEDULED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


# A dict lookup: calling the Enum class costs several times more (20 per page).
_STATUS_OF: Mapping[str, OrderStatus] = {s.value: s for s in OrderStatus}


@strawberry.enum
class OrderOrderBy(Enum):
    PLACED_AT_DESC = "PLACED_AT_DESC"
    PLACED_AT_ASC = "PLACED_AT_ASC"
    TOTAL_AMOUNT_DESC = "TOTAL_AMOUNT_DESC"


_ORDERINGS = {
    OrderOrderBy.PLACED_AT_DESC: order_summary.PLACED_AT_DESC,
    OrderOrderBy.PLACED_AT_ASC: order_summary.PLACED_AT_ASC,
    OrderOrderBy.TOTAL_AMOUNT_DESC: order_summary.TOTAL_AMOUNT_DESC,
}


@strawberry.input(description="Order list filters; all given ones must hold.")
class OrderFilter:
    status: list[OrderStatus] | None = strawberry.field(
        default=None, description="Any of these statuses.")
    customer_id: strawberry.ID | None = None
    placed_after: datetime | None = strawberry.field(
        default=None, description="Placed at or after this time (inclusive).")
    placed_before: datetime | None = strawberry.field(
        default=None, description="Placed before this time (exclusive).")
    min_total: Decimal | None = strawberry.field(
        default=None, description="Total amount at least this.")


@strawberry.type(description="One line of an order.")
class OrderItem:
    sku: strawberry.ID
    qty: int
    unit_price: Decimal | None = strawberry.field(description="Null when the order did not say.")


def _items(raw: list[dict[str, Any]]) -> list[OrderItem]:
    return [OrderItem(sku=strawberry.ID(i["sku"]), qty=i["qty"],
                      unit_price=None if i.get("unit_price") is None else Decimal(i["unit_price"]))
            for i in raw]


async def _customer(
    root: Order, info: ApiInfo
) -> Annotated[Customer, strawberry.lazy("api.types.customer")] | None:
    if root.customer_id is None:
        return None
    # Imported here: api.types.customer imports this module for Customer.orders.
    from api.types.customer import customers_by_id
    return await info.context.loader(customers_by_id).load(root.customer_id)


async def _timeline(root: Order, info: ApiInfo) -> list[OrderEvent]:
    return await info.context.loader(timelines).load(root.order_id)


@strawberry.type(description=(
    "An order as folded from its events. Fields of an event not seen yet are null: an order "
    "known only from later events has no customer, items or total until its OrderPlaced arrives."))
class Order:
    order_id: strawberry.ID
    customer_id: strawberry.ID | None
    status: OrderStatus
    items: list[OrderItem]
    item_count: int
    total_amount: Decimal | None
    currency: str | None
    placed_at: datetime | None
    inventory_reserved_at: datetime | None
    paid_at: datetime | None
    shipping_scheduled_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    refunded_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None
    carrier: str | None
    tracking_number: str | None
    paid_amount: Decimal
    refunded_amount: Decimal
    last_event_at: datetime
    event_count: int

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Order:
        # The row's columns are the fields (order_summary.COLUMNS): filling
        # __dict__ from the record skips a 23-argument __init__, a fifth of the
        # CPU of a 20-order page.
        order = cls.__new__(cls)
        fields = dict(r)
        fields["status"] = _STATUS_OF[fields["status"]]
        fields["_raw_items"] = fields.pop("items")  # made into OrderItems if read
        order.__dict__ = fields
        return order

    @classmethod
    def from_feed(cls, r: Mapping[str, Any]) -> Order:
        """From a row read with its ``updated_seq`` (the change feed, a subscription's first message)."""
        fields = dict(r)
        fields.pop("updated_seq", None)
        return cls.from_row(fields)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set: `items` of an order made by from_row.
        found = self.__dict__
        if name != "items" or "_raw_items" not in found:
            raise AttributeError(name)
        items = found["items"] = _items(found.pop("_raw_items"))
        return items

    customer = strawberry.field(
        resolver=_customer,
        description="The customer's summary (null if not visible or not known yet).")
    timeline = strawberry.field(resolver=_timeline, description="The order's events, oldest first.")


async def order(info: ApiInfo, order_id: strawberry.ID) -> Order | None:
    """One order by id; null if it does not exist or the viewer may not see it."""
    ctx = info.context
    row = await order_summary.by_id(ctx.db, ctx.viewer, order_id)
    return None if row is None else Order.from_row(row)


def _statuses(status: list[OrderStatus] | None) -> tuple[str, ...] | None:
    return None if status is None else tuple(s.value for s in status)


async def orders(
    info: ApiInfo,
    filter: OrderFilter | None = None,
    order_by: OrderOrderBy | None = OrderOrderBy.PLACED_AT_DESC,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[Order]:
    """Orders whose OrderPlaced is known, filtered and paged (first/after or last/before, at most 100)."""
    ordering = _ORDERINGS[order_by or OrderOrderBy.PLACED_AT_DESC]
    win = window(ordering, first=first, after=after, last=last, before=before)
    f = filter or OrderFilter()
    criteria = OrderCriteria(
        statuses=_statuses(f.status), customer_id=f.customer_id, placed_after=f.placed_after,
        placed_before=f.placed_before, min_total=f.min_total)
    ctx = info.context
    page = await order_summary.page_of(ctx.db, ctx.viewer, criteria, ordering, win)
    return connection(page, ordering, Order.from_row,
                      lambda: order_summary.count(ctx.db, ctx.viewer, criteria))


class _CustomerPageKey(NamedTuple):
    customer_id: str
    statuses: tuple[str, ...] | None
    win: Window


def _customer_pages(ctx: Context) -> DataLoader[_CustomerPageKey, Page[Any]]:
    """Pages of orders by customer: one statement per distinct (statuses, window)."""

    async def load(keys: list[_CustomerPageKey]) -> list[Page[Any]]:
        groups: dict[tuple[tuple[str, ...] | None, Window], list[str]] = defaultdict(list)
        for key in keys:
            groups[key.statuses, key.win].append(key.customer_id)
        found: dict[_CustomerPageKey, Page[Any]] = {}

        async def one(statuses: tuple[str, ...] | None, win: Window, ids: list[str]) -> None:
            pages = await order_summary.pages_by_customer(ctx.db, ctx.viewer, ids, statuses, win)
            found.update({_CustomerPageKey(cid, statuses, win): p for cid, p in pages.items()})

        if len(groups) == 1:  # nearly always: no task for gather() to make
            ((statuses, win), ids), = groups.items()
            await one(statuses, win, ids)
        else:
            await asyncio.gather(*(one(s, w, ids) for (s, w), ids in groups.items()))
        return [found[k] for k in keys]

    return DataLoader(load)


def _customer_counts(ctx: Context) -> DataLoader[tuple[str, tuple[str, ...] | None], int]:
    """Order counts by (customer, statuses): one statement per distinct statuses."""

    async def load(keys: list[tuple[str, tuple[str, ...] | None]]) -> list[int]:
        groups: dict[tuple[str, ...] | None, list[str]] = defaultdict(list)
        for cid, statuses in keys:
            groups[statuses].append(cid)
        found: dict[tuple[str, tuple[str, ...] | None], int] = {}
        for statuses, ids in groups.items():
            counts = await order_summary.counts_by_customer(ctx.db, ctx.viewer, ids, statuses)
            found.update({(cid, statuses): n for cid, n in counts.items()})
        return [found[k] for k in keys]

    return DataLoader(load)


async def orders_of_customer(info: ApiInfo, customer_id: str, first: int | None, after: str | None,
                             status: list[OrderStatus] | None) -> Connection[Order]:
    """A customer's orders, newest first, batched across the customers of a request."""
    ordering = order_summary.PLACED_AT_DESC
    win = window(ordering, first=first, after=after)
    statuses = _statuses(status)
    ctx = info.context
    page = await ctx.loader(_customer_pages).load(_CustomerPageKey(customer_id, statuses, win))
    return connection(page, ordering, Order.from_row,
                      lambda: ctx.loader(_customer_counts).load((customer_id, statuses)))


def order_watch(viewer: Viewer, field: str, order_id: str | None, customer_id: str | None,
                status: list[OrderStatus] | None, *, status_changes_only: bool = False) -> Watch:
    """What an order subscription watches; a customer's is always limited to its own orders."""
    owner = customer_id
    if viewer.customer_id is not None:
        if customer_id is not None and customer_id != viewer.customer_id:
            raise Forbidden("a customer may subscribe only to its own orders")
        owner = viewer.customer_id
    statuses = None if status is None else frozenset(s.value for s in status)
    return Watch(order_summary.ORDER_SUMMARY, field, key=order_id, owner=owner, statuses=statuses,
                 status_changes_only=status_changes_only)


async def order_updated(
    info: ApiInfo,
    order_id: strawberry.ID | None = None,
    customer_id: strawberry.ID | None = None,
    status: list[OrderStatus] | None = None,
) -> AsyncIterator[Order]:
    """Orders as they change (all given filters must hold; none: every order a viewer may see).
    With ``orderId``, the order's current state comes first, if it exists."""
    ctx = info.context
    live = ctx.require_live()
    watch = order_watch(ctx.viewer, "orderUpdated", order_id, customer_id, status)
    return _order_updates(ctx, live.registry.subscribe(watch))


async def _order_updates(ctx: Context, subscription: Any) -> AsyncGenerator[Order, None]:
    # Subscribed before the first read: a change committed meanwhile is sent
    # after it (or skipped if the first read already showed it: the floor).
    sub: Subscriber
    with subscription as sub:
        key = sub.watch.key
        if key is not None:
            row = await order_summary.by_id_with_seq(ctx.db, ctx.viewer, str(key))
            if row is not None and sub.accepts(row):
                sub.floor = row["updated_seq"]
                PUSH_STARTED.set(None)
                yield Order.from_feed(row)
        async for change in sub.changes():
            yield Order.from_feed(change.row)
