"""The `projector` command: one console script, a subcommand per module.

Each module in ``projector.commands`` has ``NAME``, ``HELP``,
``configure(parser)`` and ``run(args, settings) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from projector import __version__, logs
from projector.errors import ProjectorError
from projector.settings import Settings

COMMANDS = ("dev", "run", "serve", "migrate", "rebuild", "status", "simulate", "dlq", "pause",
            "resume")


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"projector.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="projector",
        description="CQRS read-model projection server: Kafka order events -> PostgreSQL "
                    "read models -> GraphQL.")
    parser.add_argument("--version", action="version", version=f"projector {__version__}")
    parser.add_argument("--database-url", help="PostgreSQL URL (env DATABASE_URL)")
    parser.add_argument("--kafka-bootstrap-servers",
                        help="host:port[,host:port] (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (env LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(
            database_url=args.database_url,
            kafka_bootstrap_servers=args.kafka_bootstrap_servers,
            log_level=args.log_level.upper() if args.log_level else None,
        )
        logs.configure(settings.log_level, settings.log_format)
        return int(args._module.run(args, settings))
    except ProjectorError as exc:
        # A user-facing error: what was wrong and what to do, no traceback.
        print(f"projector {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
