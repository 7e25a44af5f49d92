"""DeadLetter: an event the engine could not decode or apply; the `deadLetters` query (admins only)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry

from api.context import ApiInfo
from api.errors import Forbidden
from api.pagination import window
from api.sql import core
from api.types.connection import Connection, connection
from api.types.scalars import Long


@strawberry.type(description="An event set aside by the engine, with why.")
class DeadLetter:
    id: strawberry.ID
    projection: str = strawberry.field(description="The projection that failed it; `*`: the decoder.")
    topic: str
    partition: int
    offset: Long
    key: str | None = strawberry.field(description="The record key as UTF-8 (first 4 KiB).")
    reason: str
    error: str
    event_id: str | None
    event_type: str | None
    payload: str | None = strawberry.field(
        description="The record value as UTF-8 (first 4 KiB; invalid bytes shown as U+FFFD).")
    payload_bytes: int | None = strawberry.field(description="The whole value's size in bytes.")
    payload_truncated: bool
    first_seen_at: datetime

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> DeadLetter:
        size = r["payload_bytes"]
        return cls(
            id=strawberry.ID(str(r["id"])), projection=r["projection"], topic=r["topic"],
            partition=r["partition"], offset=Long(r["offset"]), key=core.decode_text(r["key"]),
            reason=r["reason"], error=r["error"], event_id=r["event_id"], event_type=r["event_type"],
            payload=core.decode_text(r["payload"]), payload_bytes=size,
            payload_truncated=size is not None and size > core.PAYLOAD_MAX_BYTES,
            first_seen_at=r["first_seen_at"])


async def dead_letters(info: ApiInfo, first: int | None = None, after: str | None = None,
                       reason: str | None = None) -> Connection[DeadLetter]:
    """Dead letters, newest first, optionally of one reason (admins only)."""
    ctx = info.context
    if not ctx.viewer.is_admin:
        raise Forbidden("`deadLetters` is for admins only")
    win = window(core.NEWEST_FIRST, first=first, after=after)
    page = await core.dead_letters(ctx.db, reason, win)
    return connection(page, core.NEWEST_FIRST, DeadLetter.from_row,
                      lambda: core.count_dead_letters(ctx.db, reason))
