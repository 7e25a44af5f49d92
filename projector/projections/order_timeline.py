"""The ``order_timeline`` read model: one row per applied event, and its projection.

Rows are keyed by ``event_id``: a duplicate delivery is ignored (``ON CONFLICT
DO NOTHING``), so the row keeps the log position (topic, partition, offset) it
was first applied from.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from projector.projection import Positioned
from projector.projections import _rows
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident

TABLE = "order_timeline"


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``order_timeline`` under ``table``.

    ``partition`` and ``offset`` are SQL keywords: quote them in queries.
    """
    t = quote_ident(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "    event_id text PRIMARY KEY,\n"
        "    order_id text NOT NULL,\n"
        "    event_type text NOT NULL,\n"
        "    occurred_at timestamptz NOT NULL,\n"
        "    topic text NOT NULL,\n"
        '    "partition" integer NOT NULL,\n'
        '    "offset" bigint NOT NULL,\n'
        "    updated_seq bigint NOT NULL\n"
        ")",
        # The API reads an order's events by (order_id, occurred_at); event_id,
        # its tie-breaker, is left out of the index: a third of its size, sorted cheaply.
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'order_idx')} "
        f"ON {t} (order_id, occurred_at)",
    ]


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str) -> str:
    values = ", ".join(_rows.fields(("text", "text", "text", "timestamptz", "text", "int4", "int8")))
    return (
        f'INSERT INTO {quote_ident(table)} (event_id, order_id, event_type, occurred_at, topic, '
        '"partition", "offset", updated_seq) '
        f"SELECT {values}, nextval('{UPDATED_SEQ}') FROM jsonb_array_elements($1::jsonb) AS r "
        "ON CONFLICT (event_id) DO NOTHING"
    )


class TimelineProjection:
    """Projection ``timeline``: appends each new event to ``order_timeline``."""

    name: str = "timeline"
    version: int = 1
    tables: tuple[str, ...] = (TABLE,)

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        """CREATE statements for the physical name of ``order_timeline``."""
        return ddl(physical[TABLE])

    async def apply(
        self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]
    ) -> set[str]:
        """Insert the batch's events not yet in the table, in one statement.

        Returns ``{"order_timeline"}`` if any row was inserted, else an empty set.
        """
        # A duplicate keeps its first position: read backwards, the first one is set last.
        first = {p.event.event_id: p for p in reversed(batch)}
        if not first:
            return set()
        rows = []
        for event_id in sorted(first):  # key order, as every writer here locks keys
            event, topic, partition, offset = first[event_id]
            rows.append((event_id, event.order_id, event.event_type, event.occurred_at, topic,
                         partition, offset))
        status = await conn.execute(_insert_sql(physical[TABLE]), _rows.param(rows))
        # Command tag "INSERT 0 <rows>".
        return {TABLE} if int(status.rsplit(" ", 1)[-1]) > 0 else set()
