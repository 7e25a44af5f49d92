"""What every projection's state is, read from the database (for CLI, API, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from projector.checkpoints import FROM_LOG_START


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    checkpoint: int  # next offset to apply; -1: nothing applied yet
    end_offset: int | None  # the log end the owning instance last saw
    refused: str | None = None

    @property
    def lag(self) -> int | None:
        if self.end_offset is None:
            return None
        return max(0, self.end_offset - max(0, self.checkpoint))


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    version: int
    state: str
    paused: bool
    events_per_second: float
    last_event_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    dead_letters: int
    partitions: tuple[PartitionStatus, ...] = field(default=())
    partial: bool = False
    # A running rebuild: {generation, phase, done, total, events_per_second, eta_s}.
    rebuild: dict[str, Any] | None = None

    @property
    def lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


async def read_status(conn: asyncpg.Connection) -> list[ProjectionStatus]:
    """Every projection with its partitions, in name order. Four statements."""
    projections = await conn.fetch(
        "SELECT name, version, state, paused, events_per_second, last_event_at, heartbeat_at,"
        " extract(epoch FROM now() - heartbeat_at) AS age FROM projections ORDER BY name")
    parts = await conn.fetch(
        "SELECT c.projection, c.topic, c.partition, c.next_offset, s.end_offset, r.reason"
        " FROM projector_checkpoints c"
        " LEFT JOIN partition_status s ON s.topic = c.topic AND s.partition = c.partition"
        " LEFT JOIN refused_partitions r ON r.projection = c.projection AND r.topic = c.topic"
        "  AND r.partition = c.partition"
        " ORDER BY c.projection, c.topic, c.partition")
    letters = dict(await conn.fetch(
        "SELECT projection, count(*) FROM dead_letters GROUP BY projection"))
    rebuilds: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch("SELECT projection, generation, progress::text AS progress"
                              " FROM rebuilds WHERE state = 'RUNNING' ORDER BY generation"):
        info = orjson.loads(r["progress"])
        info.pop("partitions", None)
        rebuilds[r["projection"]] = {"generation": r["generation"], **info}
    partial = {r["name"] for r in await conn.fetch(
        "SELECT name FROM projections WHERE partial")}
    shared = int(letters.get("*", 0))
    by_name: dict[str, list[PartitionStatus]] = {}
    for r in parts:
        by_name.setdefault(r["projection"], []).append(PartitionStatus(
            r["topic"], r["partition"], r["next_offset"], r["end_offset"], r["reason"]))
    out = []
    for p in projections:
        partitions = tuple(by_name.get(p["name"], []))
        state = p["state"]
        if any(x.refused for x in partitions):
            state = "FAILED"
        out.append(ProjectionStatus(
            name=p["name"], version=p["version"], state=state, paused=p["paused"],
            events_per_second=float(p["events_per_second"]), last_event_at=p["last_event_at"],
            heartbeat_at=p["heartbeat_at"],
            heartbeat_age_s=None if p["age"] is None else float(p["age"]),
            dead_letters=shared + int(letters.get(p["name"], 0)), partitions=partitions,
            partial=p["name"] in partial, rebuild=rebuilds.get(p["name"])))
    return out


def applied(p: PartitionStatus) -> int:
    return 0 if p.checkpoint == FROM_LOG_START else p.checkpoint
