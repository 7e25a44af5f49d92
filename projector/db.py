"""PostgreSQL at the edge: pools, error translation, migrations."""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson

from projector.errors import ConfigError, TransientError
from projector.projection import Projection

log = logging.getLogger("projector.db")

# asyncpg errors that mean "try again later", not "this is wrong".
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    # The server ended the session between two statements (a FATAL at shutdown): asyncpg
    # then refuses the next one ("cannot switch to state ...; another operation is in
    # progress"). The connection is dropped on release; a new one works.
    asyncpg.exceptions.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, _TRANSIENT)


# The projector's own sessions plan every statement with its arguments. Its tables start
# empty (a new deployment, a rebuild's shadow tables) and grow, and PostgreSQL keeps a generic
# plan made while a table was small: a seq scan for `order_id = ANY($1)` that, 16,000 orders
# later, read the whole table on every batch. Planning costs ~0.1 ms a statement. A batch's
# transaction (projector.engine.BATCH_BEGIN) keeps generic plans with sequential scans off.
# Commits do not wait for the WAL flush (synchronous_commit=off): a batch's rows and its
# checkpoints are in one transaction, and a crash of PostgreSQL loses the last few
# transactions whole (at most ~3 x wal_writer_delay), checkpoints included, so the projector
# applies those events again from the log: still exactly once. It saves a WAL flush per
# batch on the live path. `?synchronous_commit=on` in DATABASE_URL restores it.
WRITER_SETTINGS = {"plan_cache_mode": "force_custom_plan", "application_name": "projector",
                   "synchronous_commit": "off"}


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pools' ``reset``: nothing beyond what asyncpg always does on release (roll
    back a transaction left open, drop listeners). Its default (RESET ALL, CLOSE ALL,
    UNLISTEN *, pg_advisory_unlock_all()) is one more round trip per transaction, on
    the batch's path; no pooled session here keeps state past its transaction: locks
    are transaction-level, and the session-level ones (``projector rebuild --cancel``)
    are released where they are taken."""
    return None


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 4,
                      **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections decode jsonb with orjson (with the projector's
    :data:`WRITER_SETTINGS` unless ``server_settings`` are given), released
    without a reset statement (:func:`keep_session`).

    A setting the URL gives (``?application_name=...``) wins over ours: asyncpg
    would let ours override it.
    """
    given = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    settings = kwargs.get("server_settings", WRITER_SETTINGS)
    kwargs["server_settings"] = {k: v for k, v in settings.items() if k not in given}
    kwargs.setdefault("reset", keep_session)

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=lambda v: v if isinstance(v, str)
                                  else orjson.dumps(v).decode(), decoder=orjson.loads,
                                  schema="pg_catalog")

    try:
        return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         init=init, **kwargs)
    except (OSError, asyncpg.exceptions.PostgresConnectionError) as exc:
        raise TransientError(f"cannot connect to PostgreSQL at {_redact(url)}: {exc}") from exc
    except asyncpg.exceptions.InvalidCatalogNameError as exc:
        raise ConfigError(f"DATABASE_URL names a database that does not exist: {exc}") from exc


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{host}"


redact_url = _redact

# Serialises concurrent `migrate` runs (two processes starting at once).
_MIGRATION_LOCK = 0x70726F6A  # "proj"


def _core_migrations() -> list[tuple[str, str]]:
    files = importlib.resources.files("projector.migrations")
    return sorted((f.name, f.read_text()) for f in files.iterdir() if f.name.endswith(".sql"))


async def migrate(conn: asyncpg.Connection, projections: Iterable[Projection]) -> list[str]:
    """Apply pending core migrations and create missing read tables.

    Idempotent and safe to run from several processes at once. Returns the
    names of the migrations applied now.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in _core_migrations():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
        for p in projections:
            row = await conn.fetchrow("SELECT tables FROM projections WHERE name = $1", p.name)
            physical: dict[str, str] = (
                dict(orjson.loads(row["tables"]) if isinstance(row["tables"], str)
                     else row["tables"]) if row else {t: t for t in p.tables})
            for t in p.tables:  # a projection that grew a table keeps its old ones
                physical.setdefault(t, t)
            for stmt in p.ddl(physical):
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO projections (name, version, tables) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT (name) DO UPDATE SET tables = excluded.tables",
                p.name, p.version, orjson.dumps(physical).decode())
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


async def physical_tables(conn: asyncpg.Connection, name: str) -> dict[str, str]:
    """Logical -> physical table names of a projection's live tables."""
    raw = await conn.fetchval("SELECT tables FROM projections WHERE name = $1", name)
    if raw is None:
        return {}
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return {str(k): str(v) for k, v in data.items()}


async def reset_read_models(conn: asyncpg.Connection, projections: Iterable[Projection]) -> None:
    """Empty every read table, checkpoint and dead letter (the log they came from is gone)."""
    tables = ["projector_checkpoints", "dead_letters", "refused_partitions"]
    for p in projections:
        tables += list((await physical_tables(conn, p.name)).values())
    await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
