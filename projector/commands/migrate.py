"""`projector migrate`: apply database migrations and create the read tables."""

from __future__ import annotations

import argparse
import asyncio

from projector.db import create_pool, migrate
from projector.settings import Settings
from projector.topics import ensure_topics

NAME = "migrate"
HELP = "apply pending database migrations and create missing read tables"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--create-topics", action="store_true",
                        help="also create the missing order topics (needs KAFKA_BOOTSTRAP_SERVERS)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from projector.projections import ALL

    async def main() -> int:
        pool = await create_pool(settings.require_database(), min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn, ALL)
        finally:
            await pool.close()
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        if args.create_topics:
            created = await ensure_topics(settings.require_kafka(), settings.topics,
                                          settings.topic_partitions)
            print("created topics: " + ", ".join(created) if created else "topics exist")
        return 0

    return asyncio.run(main())
