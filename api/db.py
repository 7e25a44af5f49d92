"""The read side of PostgreSQL: its own pool, table names, and a per-request handle.

Every read statement goes through a :class:`ReadDb`, which counts statements
and remembers which read tables the request touched (for the freshness
extension), and translates a statement timeout into a clear client error.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import asyncpg

from api.errors import QueryTimeout
from projector.db import create_pool

STATEMENT_TIMEOUT_MS = 5_000
READ_POOL_MIN = 2
READ_POOL_MAX = 10


async def create_read_pool(url: str, *, min_size: int = READ_POOL_MIN,
                           max_size: int = READ_POOL_MAX) -> asyncpg.Pool:
    """A pool for the API's reads (DATABASE_READ_URL may be a replica).

    Sessions are read-only and every statement is cancelled after
    STATEMENT_TIMEOUT_MS (5,000 ms), so one expensive query cannot hold a
    connection for long.
    """
    return await create_pool(url, min_size=min_size, max_size=max_size,
                             server_settings={
                                 "statement_timeout": str(STATEMENT_TIMEOUT_MS),
                                 "default_transaction_read_only": "on",
                                 "application_name": "projector-api",
                             })


@functools.cache
def table(logical: str) -> str:
    """The quoted physical name of a read table, e.g. ``table("order_summary")``.

    For now the logical name itself. After a blue/green rebuild the
    ``projections`` row names other physical tables; resolving them belongs
    here, and only here.
    """
    return ".".join('"' + part.replace('"', '""') + '"' for part in logical.split("."))


class Sql(NamedTuple):
    """A statement and the logical read tables it reads."""

    text: str
    tables: tuple[str, ...]


class Where:
    """Builds a WHERE clause and its numbered parameters together."""

    __slots__ = ("args", "clauses")

    def __init__(self, *args: Any) -> None:
        self.args: list[Any] = list(args)
        self.clauses: list[str] = []

    def param(self, value: Any) -> str:
        """``$n`` for ``value``, appended to the arguments."""
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


class ReadPool(Protocol):
    """What ReadDb needs of an asyncpg.Pool (tests wrap one to count statements)."""

    async def fetch(self, query: str, *args: Any) -> Any: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


class ReadDb:
    """The request's handle on the read pool.

    ``statements`` counts the statements run; ``tables`` collects the logical
    read tables they read.
    """

    __slots__ = ("pool", "statements", "tables")

    def __init__(self, pool: ReadPool) -> None:
        self.pool = pool
        self.statements = 0
        self.tables: set[str] = set()

    async def fetch(self, sql: Sql, *args: Any) -> Sequence[asyncpg.Record]:
        self._note(sql)
        try:
            rows: Sequence[asyncpg.Record] = await self.pool.fetch(sql.text, *args)
        except asyncpg.QueryCanceledError as exc:
            raise _timeout() from exc
        return rows

    async def fetchrow(self, sql: Sql, *args: Any) -> asyncpg.Record | None:
        self._note(sql)
        try:
            row: asyncpg.Record | None = await self.pool.fetchrow(sql.text, *args)
        except asyncpg.QueryCanceledError as exc:
            raise _timeout() from exc
        return row

    def _note(self, sql: Sql) -> None:
        self.statements += 1
        self.tables.update(sql.tables)


def _timeout() -> QueryTimeout:
    return QueryTimeout(
        f"the query ran longer than {STATEMENT_TIMEOUT_MS / 1000:g} s and was cancelled: "
        "ask for fewer rows or a narrower filter")
