"""The dead-letter store: events that could not be applied, kept with their bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

# Decoder rejections are the same for every projection: one entry, shared.
ALL_PROJECTIONS = "*"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    projection: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    error: str
    event_id: str | None = None
    event_type: str | None = None


def _headers_json(headers: Sequence[tuple[str, bytes]]) -> str:
    return orjson.dumps([[k, v.decode("utf-8", "replace")] for k, v in headers]).decode()


async def write(conn: asyncpg.Connection, letters: Sequence[DeadLetter]) -> int:
    """Insert ``letters`` in one statement; an entry already there is kept."""
    if not letters:
        return 0
    cols = list(zip(*[
        (d.projection, d.topic, d.partition, d.offset, d.key, d.value, _headers_json(d.headers),
         d.reason, d.error[:8000], d.event_id, d.event_type) for d in letters], strict=True))
    status = await conn.execute(
        'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, headers,'
        " reason, error, event_id, event_type)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bytea[],"
        " $6::bytea[], $7::jsonb[], $8::text[], $9::text[], $10::text[], $11::text[])"
        " ON CONFLICT DO NOTHING", *[list(c) for c in cols])
    return int(status.rsplit(" ", 1)[-1])
