"""`projector run`: the projector workers only (consume and project)."""

from __future__ import annotations

import argparse
import asyncio

from projector.runtime import run_until_signal
from projector.settings import Settings
from projector.workers import run_workers

NAME = "run"
HELP = "run the projector workers: consume the order topics into the read models"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-migrate", action="store_true",
                        help="do not apply pending database migrations at start")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_database()
    settings.require_kafka()

    async def main(stopping: asyncio.Event) -> int:
        await run_workers(settings, stopping, apply_migrations=not args.no_migrate)
        return 0

    return run_until_signal(main)
