"""ProjectionStatus: each projection's version, state and checkpoints (admins only).

End offsets, lag, throughput and rebuild progress come from the engine, which
does not publish them yet: those fields are null until it does. ``checkpoint``
is exact: it is read from projector_checkpoints.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from api.context import ApiInfo
from api.errors import Forbidden
from api.freshness import Snapshot
from api.sql import core
from api.types.scalars import Long


@strawberry.enum
class ProjectionState(Enum):
    LIVE = "LIVE"
    CATCHING_UP = "CATCHING_UP"
    REBUILDING = "REBUILDING"
    PAUSED = "PAUSED"
    FAILED = "FAILED"


@strawberry.type(description="A projection's position in one partition.")
class PartitionStatus:
    topic: str
    partition: int
    checkpoint: Long = strawberry.field(
        description="The next offset to apply; -1: nothing applied yet (reads from the log start).")
    end_offset: Long | None = strawberry.field(
        description="The partition's end offset: null until the engine publishes it.")
    lag: Long | None = strawberry.field(description="end_offset - checkpoint: null while unknown.")
    checkpointed_at: datetime = strawberry.field(description="When the checkpoint last moved.")


@strawberry.type(description="A projection: its version, state and positions.")
class ProjectionStatus:
    name: str
    version: int
    state: ProjectionState
    lag: Long | None = strawberry.field(
        description="Events behind the log ends over all partitions: null while end offsets are unknown.")
    partitions: list[PartitionStatus]
    events_per_second: float | None = strawberry.field(
        description="Recent apply rate: null until the engine publishes it.")
    last_event_at: datetime | None = strawberry.field(
        description="When the checkpoint last moved in any partition (null: never).")
    rebuild_progress: float | None = strawberry.field(
        description="0..1 while REBUILDING: null until the engine publishes it.")


def _partition(row: list[Any]) -> PartitionStatus:
    _, topic, partition, next_offset, updated_at = row
    return PartitionStatus(topic=topic, partition=partition, checkpoint=Long(next_offset),
                           end_offset=None, lag=None,
                           checkpointed_at=datetime.fromisoformat(updated_at))


def statuses(snapshot: Snapshot) -> list[ProjectionStatus]:
    by_projection: dict[str, list[PartitionStatus]] = {}
    for row in snapshot.checkpoints:
        by_projection.setdefault(row[0], []).append(_partition(row))
    out = []
    for p in snapshot.projections:
        partitions = by_projection.get(p["name"], [])
        out.append(ProjectionStatus(
            name=p["name"], version=p["version"], state=ProjectionState(p["state"]), lag=None,
            partitions=partitions, events_per_second=None,
            last_event_at=max((x.checkpointed_at for x in partitions), default=None),
            rebuild_progress=None))
    return out


async def projections(info: ApiInfo) -> list[ProjectionStatus]:
    """Every projection with its checkpoints (admins only)."""
    ctx = info.context
    if not ctx.viewer.is_admin:
        raise Forbidden("`projections` is for admins only")
    row = await core.snapshot(ctx.db)
    return statuses(Snapshot.from_row(row, 0.0))
