"""ProjectionStatus: each projection's state, positions and rates; `projections` and
`projectionProgress` (admins only).

What the engine publishes (``projections``: state, events/s, heartbeat;
``partition_status``: the log end each partition's owner last saw;
``rebuilds``: a running rebuild's progress) beside the exact checkpoints of
``projector_checkpoints``, as ``projector status`` shows them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry

from api.context import ApiInfo, Context
from api.errors import ApiError, Forbidden
from api.fanout import PUSH_STARTED
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
        description="The partition's end offset as its engine last saw it (null: not seen yet).")
    lag: Long | None = strawberry.field(description="end_offset - checkpoint: null while unknown.")
    checkpointed_at: datetime = strawberry.field(description="When the checkpoint last moved.")


@strawberry.type(description="A projection: its version, state and positions.")
class ProjectionStatus:
    name: str
    version: int
    state: ProjectionState
    lag: Long | None = strawberry.field(
        description="Events behind the log ends over all partitions: null while an end offset is unknown.")
    partitions: list[PartitionStatus]
    events_per_second: float | None = strawberry.field(
        description="Recent apply rate (null: no engine has published one yet).")
    last_event_at: datetime | None = strawberry.field(
        description="When the checkpoint last moved in any partition (null: never).")
    rebuild_progress: float | None = strawberry.field(
        description="0..1 while a rebuild of this projection runs; null otherwise.")


def _partition(row: Sequence[Any]) -> PartitionStatus:
    topic, partition, next_offset, end_offset, updated_at = row
    lag = None if end_offset is None else max(0, end_offset - max(0, next_offset))
    return PartitionStatus(topic=topic, partition=partition, checkpoint=Long(next_offset),
                           end_offset=None if end_offset is None else Long(end_offset),
                           lag=None if lag is None else Long(lag),
                           checkpointed_at=datetime.fromisoformat(updated_at))


def _progress(rebuild: Mapping[str, Any] | None) -> float | None:
    if rebuild is None:
        return None
    done, total = rebuild.get("done") or 0, rebuild.get("total") or 0
    return min(1.0, done / total) if total > 0 else 0.0


def status_of(row: Mapping[str, Any]) -> ProjectionStatus:
    """A ProjectionStatus from a ``core.PROJECTION_STATUS`` record."""
    partitions = [_partition(p) for p in row["partitions"]]
    lags = [p.lag for p in partitions]
    return ProjectionStatus(
        name=row["name"], version=row["version"],
        # As `projector status`: a refused partition makes the projection FAILED.
        state=ProjectionState.FAILED if row["refused"] else ProjectionState(row["state"]),
        lag=Long(sum(x for x in lags if x is not None)) if lags and None not in lags else None,
        partitions=partitions,
        events_per_second=None if row["heartbeat_at"] is None else float(row["events_per_second"]),
        last_event_at=max((x.checkpointed_at for x in partitions), default=None),
        rebuild_progress=_progress(row["rebuild"]))


async def projections(info: ApiInfo) -> list[ProjectionStatus]:
    """Every projection with its checkpoints (admins only)."""
    ctx = info.context
    if not ctx.viewer.is_admin:
        raise Forbidden("`projections` is for admins only")
    return [status_of(r) for r in await core.projection_status(ctx.db)]


async def projection_progress(info: ApiInfo, name: str | None = None) -> AsyncIterator[ProjectionStatus]:
    """Each projection's status now, then whenever it changes (read once a second; admins only)."""
    ctx = info.context
    if not ctx.viewer.is_admin:
        raise Forbidden("`projectionProgress` is for admins only")
    live = ctx.require_live()
    if name is not None:
        known = [r["name"] for r in await core.projection_status(ctx.db)]
        if name not in known:
            raise ApiError(f"no projection named {name!r} (known: {', '.join(known)})")
    return _progress_stream(ctx, live.progress.subscribe(name), name)


async def _progress_stream(ctx: Context, subscription: AbstractAsyncContextManager[AsyncIterator[Any]],
                           name: str | None) -> AsyncGenerator[ProjectionStatus, None]:
    # Subscribed before the first read: a change the poller sees meanwhile is
    # then sent too, never lost between the two.
    sent: dict[str, ProjectionStatus] = {}
    async with subscription as updates:
        PUSH_STARTED.set(None)
        for row in await core.projection_status(ctx.db):
            if name is None or row["name"] == name:
                sent[row["name"]] = status = status_of(row)
                yield status
        async for status in updates:
            # The poller's first read may repeat what was just sent.
            if sent.get(status.name) != status:
                sent[status.name] = status
                yield status
