"""Operator switches stored in the database, read by every running projector."""

from __future__ import annotations

import asyncpg

from projector.errors import ConfigError
from projector.settings import Settings


async def set_paused(settings: Settings, names: list[str], *, paused: bool) -> int:
    conn = await asyncpg.connect(settings.require_database())
    try:
        known = {r["name"] for r in await conn.fetch("SELECT name FROM projections")}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"no projection named {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        await conn.execute(
            "UPDATE projections SET paused = $2, state = CASE WHEN $2 THEN 'PAUSED'"
            " ELSE state END WHERE name = ANY($1)", names, paused)
    finally:
        await conn.close()
    verb = "paused" if paused else "resumed"
    print(f"{verb}: {', '.join(names)} (running projectors pick this up within a second)")
    return 0
