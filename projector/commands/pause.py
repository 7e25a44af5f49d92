"""`projector pause NAME`: stop applying one projection while the others go on."""

from __future__ import annotations

import argparse
import asyncio

from projector.commands._control import set_paused
from projector.settings import Settings

NAME = "pause"
HELP = "pause a projection: the live projector stops applying it; the others continue"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="projection name(s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(set_paused(settings, args.names, paused=True))
