"""OrderStatusChange: an order that reached a new status; the `orderStatusChanged` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import strawberry

from api.context import ApiInfo
from api.fanout import Subscriber
from api.types.order import Order, OrderStatus, order_watch

# The status lattice (README: "How an order row is merged"), lowest first, with
# the column holding when the order reached each stage.
_STAGES: tuple[tuple[OrderStatus, str], ...] = (
    (OrderStatus.PLACED, "placed_at"),
    (OrderStatus.INVENTORY_RESERVED, "inventory_reserved_at"),
    (OrderStatus.FAILED, "failed_at"),
    (OrderStatus.PAID, "paid_at"),
    (OrderStatus.SHIPPING_SCHEDULED, "shipping_scheduled_at"),
    (OrderStatus.SHIPPED, "shipped_at"),
    (OrderStatus.DELIVERED, "delivered_at"),
    (OrderStatus.CANCELLED, "cancelled_at"),
    (OrderStatus.REFUNDED, "refunded_at"),
)
_RANK = {status: i for i, (status, _) in enumerate(_STAGES)}


@strawberry.type(description="An order that reached a new status.")
class OrderStatusChange:
    order: Order
    previous_status: OrderStatus | None = strawberry.field(description=(
        "The highest stage below `status` the order went through, by its own history (null: none). "
        "A subscriber may not have seen it: changes close together are delivered as one."))
    status: OrderStatus
    at: datetime = strawberry.field(
        description="When the order reached `status` (its event's time; the last event's if unknown).")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OrderStatusChange:
        order = Order.from_feed(row)
        status = OrderStatus(row["status"])
        previous = None
        for stage, column in reversed(_STAGES[:_RANK[status]]):
            if row[column] is not None:
                previous = stage
                break
        reached = row[_STAGES[_RANK[status]][1]]
        return cls(order=order, previous_status=previous, status=status,
                   at=reached if reached is not None else row["last_event_at"])


async def order_status_changed(
    info: ApiInfo, status: list[OrderStatus] | None = None
) -> AsyncIterator[OrderStatusChange]:
    """Orders whose status changed (to one of ``status``, if given); a customer sees its own."""
    ctx = info.context
    live = ctx.require_live()
    watch = order_watch(ctx.viewer, "orderStatusChanged", None, None, status, status_changes_only=True)
    return _changes(live.registry.subscribe(watch))


async def _changes(subscription: Any) -> AsyncGenerator[OrderStatusChange, None]:
    sub: Subscriber
    with subscription as sub:
        async for change in sub.changes():
            yield OrderStatusChange.from_row(change.row)
