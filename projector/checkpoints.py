"""Checkpoints: the source of truth for where each projection stands.

Written in the same transaction as the rows they cover; every write is a
compare-and-set on the offset the writer expects, so an instance that lost a
partition (rebalance, long pause) cannot overwrite newer work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


# The change notification the API's feed listens for: the changed tables and the highest
# sequence this transaction drew, ``{"tables": [...], "seq": n}``; never row data (8,000 bytes).
def notify_call(channel: str, tables: str) -> str:
    """SQL sending that notification, given the parameters of the channel and the tables."""
    return (f"pg_notify({channel}, json_build_object('tables', {tables}::text[], "
            "'seq', currval('projector_updated_seq'))::text)")


NOTIFY_SQL = f"SELECT {notify_call('$1', '$2')}"

_MOVED = (
    "WITH moved AS ("
    " UPDATE projector_checkpoints c SET next_offset = u.nxt, updated_at = now()"
    " FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS u(t, p, exp, nxt)"
    " WHERE c.projection = $1 AND c.topic = u.t AND c.partition = u.p"
    " AND c.next_offset = u.exp RETURNING 1)")
_ADVANCE_SQL = f"{_MOVED} SELECT count(*) FROM moved"
# The same with the change notification: one round trip for both. A fenced transaction
# rolls back, and PostgreSQL sends a transaction's notifications only when it commits.
_ADVANCE_NOTIFY_SQL = f"{_MOVED} SELECT count(*), {notify_call('$6', '$7')} FROM moved"


async def advance(conn: asyncpg.Connection, projection: str,
                  moves: Mapping[TP, tuple[int, int]],
                  notify: tuple[str, Sequence[str]] | None = None) -> None:
    """Compare-and-set ``{tp: (expected, next)}`` in one statement.

    ``notify``: (channel, changed tables), notified in the same statement
    (see :func:`notify_call`). Raises FencedError (rolling back the
    caller's transaction) when any partition's stored offset is not the
    expected one.
    """
    if not moves:
        if notify:
            await conn.execute(NOTIFY_SQL, notify[0], sorted(notify[1]))
        return
    keys = sorted(moves)
    args: list[object] = [projection, [k[0] for k in keys], [k[1] for k in keys],
                          [moves[k][0] for k in keys], [moves[k][1] for k in keys]]
    if notify:
        args += [notify[0], sorted(notify[1])]
    updated = await conn.fetchval(_ADVANCE_NOTIFY_SQL if notify else _ADVANCE_SQL, *args)
    if updated != len(keys):
        raise FencedError(
            f"projection {projection!r}: {len(keys) - int(updated)} of {len(keys)} checkpoints "
            "moved under us (another instance owns those partitions now); re-seeking")
