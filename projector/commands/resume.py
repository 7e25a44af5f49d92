"""`projector resume NAME`: apply a paused projection again; it catches up by itself."""

from __future__ import annotations

import argparse
import asyncio

from projector.commands._control import set_paused
from projector.settings import Settings

NAME = "resume"
HELP = "resume a paused projection: it catches up from its checkpoints"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="projection name(s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(set_paused(settings, args.names, paused=False))
