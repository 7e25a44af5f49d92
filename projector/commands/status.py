"""`projector status`: not implemented yet (see the issue tracker)."""

from __future__ import annotations

import argparse
import sys

from projector.settings import Settings

NAME = "status"
HELP = "show projections, checkpoints and lag (not implemented yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    print(f"projector {NAME}: not implemented yet", file=sys.stderr)
    return 2
