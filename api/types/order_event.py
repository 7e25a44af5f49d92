"""OrderEvent: one event in an order's timeline, loaded for many orders at once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader

from api.context import Context
from api.sql import order_timeline
from api.types.scalars import Long


@strawberry.type(description="An event applied to an order, as read from the log.")
class OrderEvent:
    event_id: strawberry.ID
    event_type: str
    occurred_at: datetime
    topic: str
    partition: int
    offset: Long

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OrderEvent:
        return cls(event_id=strawberry.ID(row["event_id"]), event_type=row["event_type"],
                   occurred_at=row["occurred_at"], topic=row["topic"], partition=row["partition"],
                   offset=Long(row["offset"]))


def timelines(ctx: Context) -> DataLoader[str, list[OrderEvent]]:
    """Timelines by order id: one statement for all the orders of a request."""

    async def load(order_ids: list[str]) -> list[list[OrderEvent]]:
        grouped = await order_timeline.by_orders(ctx.db, ctx.viewer, order_ids)
        return [[OrderEvent.from_row(r) for r in grouped.get(oid, ())] for oid in order_ids]

    return DataLoader(load)
