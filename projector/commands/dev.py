"""`projector dev`: everything on one machine, for developers."""

from __future__ import annotations

import argparse
import asyncio

from projector.runtime import run_until_signal
from projector.settings import Settings

NAME = "dev"
HELP = ("all-in-one developer mode: embedded PostgreSQL and broker (unless DATABASE_URL / "
        "KAFKA_BOOTSTRAP_SERVERS are set), workers and GraphQL API")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="also publish a realistic stream of simulated order events")
    parser.add_argument("--demo-orders", type=int, default=2000, metavar="N",
                        help="orders the demo publishes (default 2000)")
    parser.add_argument("--port", type=int, help="API port (env API_PORT, default 8000)")
    parser.add_argument("--data-dir", default=".projector",
                        help="where the embedded servers keep data and logs (default ./.projector)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from projector.dev import DevStack, run_dev

    settings = settings.with_(data_dir=args.data_dir,
                              **({"api_port": args.port} if args.port else {}))
    stack = DevStack(settings)
    try:
        settings = stack.start()

        async def main(stopping: asyncio.Event) -> int:
            return await run_dev(settings, stack, stopping, args.demo, args.demo_orders)

        return run_until_signal(main)
    finally:
        stack.stop()
