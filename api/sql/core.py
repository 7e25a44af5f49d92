"""Reads of the engine's bookkeeping: projections, checkpoints, dead letters.

These tables have fixed names (``projector/migrations``), unlike the read
tables, and are read by admins and by the freshness extension only.
"""

from __future__ import annotations

import asyncpg

from api.db import ReadDb, ReadPool, Sql, Where
from api.pagination import Ordering, Page, Window, fetch_limit, keyset, page

# Bytes of a dead letter's key and value returned; the rest stays in the table.
PAYLOAD_MAX_BYTES = 4096

# One statement for everything the freshness extension and `projections` need.
SNAPSHOT = Sql(
    "SELECT now() AS as_of,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_object('name', name, 'version', version,"
    "   'state', state, 'tables', tables) ORDER BY name), '[]') FROM projections) AS projections,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(c.projection, c.topic, c.partition, c.next_offset,"
    "   s.end_offset) ORDER BY c.projection, c.topic, c.partition), '[]') FROM projector_checkpoints c"
    "   LEFT JOIN partition_status s ON s.topic = c.topic AND s.partition = c.partition)"
    " AS checkpoints", ())


async def snapshot(db: ReadDb | ReadPool) -> asyncpg.Record:
    """``as_of`` (database time), ``projections`` and ``checkpoints`` (decoded jsonb)."""
    row = await db.fetchrow(SNAPSHOT) if isinstance(db, ReadDb) else await db.fetchrow(SNAPSHOT.text)
    assert row is not None, "SELECT without FROM returned no row"
    return row


# Each projection with what `projections` and `projectionProgress` show: the
# engine's published state and rate, each partition's checkpoint beside the log
# end the engine last saw, whether a partition is refused, a running rebuild's
# progress. The same sources as projector.status.read_status, in one statement.
PROJECTION_STATUS = Sql(
    "SELECT p.name, p.version, p.state, p.heartbeat_at, p.events_per_second,"
    " EXISTS (SELECT 1 FROM refused_partitions r WHERE r.projection = p.name) AS refused,"
    " coalesce((SELECT jsonb_agg(jsonb_build_array(c.topic, c.partition, c.next_offset, s.end_offset,"
    "   c.updated_at) ORDER BY c.topic, c.partition) FROM projector_checkpoints c"
    "   LEFT JOIN partition_status s ON s.topic = c.topic AND s.partition = c.partition"
    "   WHERE c.projection = p.name), '[]') AS partitions,"
    " (SELECT b.progress FROM rebuilds b WHERE b.projection = p.name AND b.state = 'RUNNING'"
    "   ORDER BY b.generation DESC LIMIT 1) AS rebuild"
    " FROM projections p ORDER BY p.name", ())


async def projection_status(db: ReadDb | ReadPool) -> list[asyncpg.Record]:
    """One record per projection (see PROJECTION_STATUS); jsonb decoded."""
    rows = await db.fetch(PROJECTION_STATUS) if isinstance(db, ReadDb) else await db.fetch(
        PROJECTION_STATUS.text)
    return list(rows)


NEWEST_FIRST = Ordering("dead_letters.id_desc", (("id", True),), (int,))

_DEAD_LETTER_COLUMNS = (
    f'id, projection, topic, "partition", "offset", substring(key from 1 for {PAYLOAD_MAX_BYTES}) AS key,'
    f" substring(value from 1 for {PAYLOAD_MAX_BYTES}) AS payload, octet_length(value) AS payload_bytes,"
    " reason, error, event_id, event_type, first_seen_at"
)


def _dead_letters_where(reason: str | None) -> Where:
    where = Where()
    if reason is not None:
        where.add(f"reason = {where.param(reason)}")
    return where


async def dead_letters(db: ReadDb, reason: str | None, win: Window) -> Page[asyncpg.Record]:
    """A page of dead letters, newest first; uses the (reason, id) index when filtered."""
    where = _dead_letters_where(reason)
    keyset(where, NEWEST_FIRST, win)
    limit = where.param(fetch_limit(win))
    text = (f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters{where.sql()} "
            f"ORDER BY {NEWEST_FIRST.order_by(win.backward)} LIMIT {limit}")
    return page(await db.fetch(Sql(text, ()), *where.args), win)


async def count_dead_letters(db: ReadDb, reason: str | None) -> int:
    where = _dead_letters_where(reason)
    row = await db.fetchrow(Sql(f"SELECT count(*) FROM dead_letters{where.sql()}", ()), *where.args)
    return int(row[0]) if row is not None else 0


def decode_text(raw: bytes | None) -> str | None:
    """Bytes shown as text; undecodable bytes (or a cut UTF-8 sequence) become U+FFFD."""
    return None if raw is None else raw.decode("utf-8", errors="replace")
