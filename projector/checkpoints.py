"""Checkpoints: the source of truth for where each projection stands.

Written in the same transaction as the rows they cover; every write is a
compare-and-set on the offset the writer expects, so an instance that lost a
partition (rebalance, long pause) cannot overwrite newer work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

from projector.errors import FencedError

TP = tuple[str, int]  # (topic, partition)

# A partition with no checkpoint yet is consumed from the log start.
FROM_LOG_START = -1


async def load(conn: asyncpg.Connection, projection: str, tps: Iterable[TP]) -> dict[TP, int]:
    """Stored next offsets for ``tps``, creating missing rows as FROM_LOG_START."""
    tps = sorted(set(tps))
    if not tps:
        return {}
    topics = [t for t, _ in tps]
    parts = [p for _, p in tps]
    await conn.execute(
        "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
        " SELECT $1, t, p, $4 FROM unnest($2::text[], $3::int[]) AS u(t, p)"
        " ON CONFLICT DO NOTHING", projection, topics, parts, FROM_LOG_START)
    rows = await conn.fetch(
        "SELECT c.topic, c.partition, c.next_offset FROM projector_checkpoints c"
        " JOIN unnest($2::text[], $3::int[]) AS u(t, p) ON c.topic = u.t AND c.partition = u.p"
        " WHERE c.projection = $1", projection, topics, parts)
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def advance(conn: asyncpg.Connection, projection: str,
                  moves: Mapping[TP, tuple[int, int]]) -> None:
    """Compare-and-set ``{tp: (expected, next)}`` in one statement.

    Raises FencedError (rolling back the caller's transaction) when any
    partition's stored offset is not the expected one.
    """
    if not moves:
        return
    keys = sorted(moves)
    updated = await conn.fetchval(
        "WITH moved AS ("
        " UPDATE projector_checkpoints c SET next_offset = u.nxt, updated_at = now()"
        " FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS u(t, p, exp, nxt)"
        " WHERE c.projection = $1 AND c.topic = u.t AND c.partition = u.p"
        " AND c.next_offset = u.exp RETURNING 1)"
        " SELECT count(*) FROM moved",
        projection, [k[0] for k in keys], [k[1] for k in keys],
        [moves[k][0] for k in keys], [moves[k][1] for k in keys])
    if updated != len(keys):
        raise FencedError(
            f"projection {projection!r}: {len(keys) - int(updated)} of {len(keys)} checkpoints "
            "moved under us (another instance owns those partitions now); re-seeking")
