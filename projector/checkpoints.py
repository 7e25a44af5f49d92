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

# What projector_advance() (migration 0005) raises when a checkpoint is not the expected one.
FENCED_SQLSTATE = "PJ409"


def _literal(value: str) -> str:
    """A SQL string literal of ``value`` (topic, projection and table names: no parameters
    in the simple protocol that carries COMMIT in the same round trip)."""
    quoted = "'" + value.replace("'", "''") + "'"
    # E'' escapes backslashes whatever standard_conforming_strings says.
    return "E" + quoted.replace("\\", "\\\\") if "\\" in value else quoted


def _array(values: Sequence[str] | Sequence[int], sql_type: str) -> str:
    items = ", ".join(_literal(v) if isinstance(v, str) else str(int(v)) for v in values)
    return f"ARRAY[{items}]::{sql_type}[]"


def commit_sql(projection: str, moves: Mapping[TP, tuple[int, int]],
               notify: tuple[str, Sequence[str]] | None = None) -> str:
    """The end of a batch's transaction, for the simple protocol: the compare-and-set of
    ``{tp: (expected, next)}`` and the change notification (``notify``: channel, changed
    tables), then COMMIT. One round trip; a moved checkpoint raises FENCED_SQLSTATE, and
    PostgreSQL runs nothing after an error in such a string: the COMMIT with it."""
    statements = []
    if moves:
        keys = sorted(moves)
        statements.append("SELECT projector_advance(" + ", ".join((
            _literal(projection), _array([k[0] for k in keys], "text"), _array([k[1] for k in keys], "int"),
            _array([moves[k][0] for k in keys], "bigint"),
            _array([moves[k][1] for k in keys], "bigint"))) + ")")
    if notify:
        statements.append(f"SELECT {notify_call(_literal(notify[0]), _array(sorted(notify[1]), 'text'))}")
    return "; ".join([*statements, "COMMIT"])


async def advance_and_commit(conn: asyncpg.Connection, projection: str,
                             moves: Mapping[TP, tuple[int, int]],
                             notify: tuple[str, Sequence[str]] | None = None) -> None:
    """Run :func:`commit_sql`: move the checkpoints, notify and commit, in one round trip.

    Raises FencedError when any partition's stored offset is not the expected one;
    the transaction is then aborted (the caller rolls it back).
    """
    try:
        await conn.execute(commit_sql(projection, moves, notify))
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == FENCED_SQLSTATE:
            raise FencedError(str(exc)) from exc
        raise
