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
    " (SELECT coalesce(jsonb_agg(jsonb_build_array(projection, topic, partition, next_offset,"
    "   updated_at) ORDER BY projection, topic, partition), '[]') FROM projector_checkpoints)"
    " AS checkpoints", ())


async def snapshot(db: ReadDb | ReadPool) -> asyncpg.Record:
    """``as_of`` (database time), ``projections`` and ``checkpoints`` (decoded jsonb)."""
    row = await db.fetchrow(SNAPSHOT) if isinstance(db, ReadDb) else await db.fetchrow(SNAPSHOT.text)
    assert row is not None, "SELECT without FROM returned no row"
    return row


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
