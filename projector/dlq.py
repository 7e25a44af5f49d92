"""The dead-letter queue for operators: list, show, replay, purge.

A replay decodes the stored bytes again and applies the event to the
projection(s) it failed for; success deletes the entry in the same
transaction that applies it, failure keeps it with the new error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from projector.db import is_transient, physical_tables
from projector.dead_letters import ALL_PROJECTIONS
from projector.engine import notify_changes
from projector.errors import ConfigError
from projector.events import Event, Rejection
from projector.projection import Positioned, Projection

log = logging.getLogger("projector.dlq")

Decode = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Event | Rejection]

_COLUMNS = ('id, projection, topic, partition, "offset", key, value, headers, reason, error,'
            " event_id, event_type, first_seen_at, attempts, last_attempt_at")


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    projection: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    error: str
    event_id: str | None
    event_type: str | None
    first_seen_at: datetime
    attempts: int
    last_attempt_at: datetime | None

    @classmethod
    def of(cls, r: asyncpg.Record) -> Entry:
        raw = r["headers"]
        pairs = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        return cls(r["id"], r["projection"], r["topic"], r["partition"], r["offset"], r["key"],
                   r["value"], [(k, v.encode()) for k, v in pairs], r["reason"], r["error"],
                   r["event_id"], r["event_type"], r["first_seen_at"], r["attempts"],
                   r["last_attempt_at"])


async def list_entries(conn: asyncpg.Connection, *, reason: str | None = None,
                       projection: str | None = None, limit: int = 50,
                       after_id: int = 0) -> list[Entry]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE id > $1"
        " AND ($2::text IS NULL OR reason = $2) AND ($3::text IS NULL OR projection = $3)"
        " ORDER BY id LIMIT $4", after_id, reason, projection, limit)
    return [Entry.of(r) for r in rows]


async def get_entry(conn: asyncpg.Connection, entry_id: int) -> Entry | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", entry_id)
    return Entry.of(row) if row else None


@dataclass(slots=True)
class ReplayResult:
    replayed: list[int]
    failed: dict[int, str]


async def replay(conn: asyncpg.Connection, projections: Sequence[Projection], decode: Decode, *,
                 ids: Sequence[int] | None = None, reason: str | None = None) -> ReplayResult:
    """Replay the chosen entries (``ids``, or every entry, optionally of one ``reason``)."""
    by_name: Mapping[str, Projection] = {p.name: p for p in projections}
    physical = {p.name: await physical_tables(conn, p.name) for p in projections}
    chosen = await conn.fetch(
        "SELECT id FROM dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY($1))"
        " AND ($2::text IS NULL OR reason = $2) ORDER BY id",
        list(ids) if ids is not None else None, reason)
    missing = sorted(set(ids or ()) - {r["id"] for r in chosen})
    if missing:
        raise ConfigError(f"no dead letter with id {', '.join(map(str, missing))}")
    result = ReplayResult([], {})
    for row in chosen:
        async with conn.transaction():
            locked = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE SKIP LOCKED",
                row["id"])
            if locked is None:
                continue  # gone, or another replay holds it
            entry = Entry.of(locked)
            error = await _replay_one(conn, entry, by_name, physical, decode)
            if error is None:
                await conn.execute("DELETE FROM dead_letters WHERE id = $1", entry.id)
                result.replayed.append(entry.id)
            else:
                await conn.execute(
                    "UPDATE dead_letters SET error = $2, attempts = attempts + 1,"
                    " last_attempt_at = now() WHERE id = $1", entry.id, error[:8000])
                result.failed[entry.id] = error
    return result


async def _replay_one(conn: asyncpg.Connection, entry: Entry, by_name: Mapping[str, Projection],
                      physical: Mapping[str, Mapping[str, str]], decode: Decode) -> str | None:
    """Apply one entry; None on success, else the error (the savepoint is undone)."""
    decoded = decode(entry.value, entry.key, entry.headers)
    if isinstance(decoded, Rejection):
        return f"{decoded.reason.value}: {decoded.detail}"
    if entry.projection == ALL_PROJECTIONS:
        targets = list(by_name.values())
    elif entry.projection in by_name:
        targets = [by_name[entry.projection]]
    else:
        return f"no projection named {entry.projection!r} in this version"
    one = [Positioned(decoded, entry.topic, entry.partition, entry.offset)]
    changed: set[str] = set()
    try:
        async with conn.transaction():
            for p in targets:
                changed |= await p.apply(conn, one, physical[p.name])
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("replay of dead letter %d failed: %r", entry.id, exc)
        return f"{type(exc).__name__}: {exc}"
    if changed:
        await notify_changes(conn, changed)
    return None


async def purge(conn: asyncpg.Connection, before: datetime) -> int:
    status: str = await conn.execute("DELETE FROM dead_letters WHERE first_seen_at < $1", before)
    return int(status.rsplit(" ", 1)[-1])


def preview(value: bytes | None, limit: int = 4096) -> str:
    """The payload as text, truncated: for humans and the API."""
    if value is None:
        return ""
    text = value.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def as_dict(e: Entry, payload_limit: int = 4096) -> dict[str, Any]:
    return {
        "id": e.id, "projection": e.projection, "topic": e.topic, "partition": e.partition,
        "offset": e.offset, "key": e.key.decode("utf-8", "replace") if e.key else None,
        "reason": e.reason, "error": e.error, "event_id": e.event_id, "event_type": e.event_type,
        "first_seen_at": e.first_seen_at.isoformat(), "attempts": e.attempts,
        "payload": preview(e.value, payload_limit),
        "headers": {k: v.decode("utf-8", "replace") for k, v in e.headers},
    }
