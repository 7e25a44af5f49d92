"""`projector rebuild`: rebuild read models from the log, blue/green, while they serve."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from projector import rebuild as rb
from projector import runtime
from projector.db import create_pool, migrate
from projector.errors import ConfigError
from projector.gc_tuning import tune_gc
from projector.projection import Projection
from projector.settings import Settings

NAME = "rebuild"
HELP = "rebuild read models from the start of the log into new tables, then swap them in"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="projection(s) to rebuild")
    parser.add_argument("--all", action="store_true", help="every projection")
    parser.add_argument("--allow-partial", action="store_true",
                        help="rebuild even if retention deleted the start of the log")
    parser.add_argument("--rollback", action="store_true",
                        help="swap the previous generation of NAME back in")
    parser.add_argument("--drop-old", action="store_true",
                        help="drop the previous generation of NAME (kept for --rollback)")
    parser.add_argument("--cancel", action="store_true", help="stop a running rebuild of NAME")
    parser.add_argument("--batch-max-events", type=int, default=20_000, metavar="N",
                        help="events per shadow batch (default 20000)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes that load the shadow tables, each a share of the "
                             "partitions (default 1; at most one per core is useful)")


class _Bars:
    """One progress bar per partition on a terminal; a line every 5 s otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.drawn = 0
        self.last_line = 0.0

    def __call__(self, p: rb.Progress) -> None:
        eta = "-" if p.eta_s is None else f"{p.eta_s:,.0f} s"
        head = (f"{p.phase}: {p.done:,}/{p.total:,} events  {p.events_per_second:,.0f} events/s"
                f"  ETA {eta}")
        if not self.tty:
            now = time.monotonic()
            if now - self.last_line >= 5:
                print(head, file=sys.stderr, flush=True)
                self.last_line = now
            return
        lines = [head]
        for topic, part, done, total in p.partitions:
            frac = done / total if total else 1.0
            bar = "#" * int(frac * 30)
            lines.append(f"  {topic[-34:]:>34}[{part}] |{bar:<30}| {done:>9,}/{total:<9,}")
        out = (f"\x1b[{self.drawn}F" if self.drawn else "") + "\n".join(
            line + "\x1b[K" for line in lines) + "\n"
        sys.stderr.write(out)
        sys.stderr.flush()
        self.drawn = len(lines)


def _select(args: argparse.Namespace) -> list[Projection]:
    from projector.projections import ALL

    by_name = {p.name: p for p in ALL}
    if args.all:
        return list(ALL)
    if not args.names:
        raise ConfigError(f"name the projection(s) to rebuild, or --all; known: {', '.join(by_name)}")
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        raise ConfigError(f"no projection named {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in args.names]


async def _main(args: argparse.Namespace, settings: Settings,
                projections: Sequence[Projection]) -> int:
    pool = await create_pool(settings.require_database(), min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, projections)
            if args.rollback or args.drop_old or args.cancel:
                for p in projections:
                    if args.cancel:
                        print(await rb.cancel(conn, p.name))
                    elif args.rollback:
                        print(await rb.rollback(conn, p))
                    else:
                        print(f"{p.name}: dropped {await rb.drop_old(conn, p)} old table(s)")
                return 0
        settings.require_kafka()
        tune_gc()
        job = rb.Rebuild(settings, pool, projections, allow_partial=args.allow_partial,
                         batch_max_events=args.batch_max_events, workers=args.workers,
                         on_progress=_Bars())
        started = time.monotonic()
        plans = await job.run()
        print(f"\nrebuilt {', '.join(p.projection.name for p in plans)} in "
              f"{time.monotonic() - started:,.1f} s; changes (live -> rebuilt):")
        for plan in plans:
            for line in plan.summary:
                print(f"  {line}")
            if plan.partial:
                print(f"  {plan.projection.name}: PARTIAL (the log did not start at offset 0)")
        print("the previous tables are kept: `projector rebuild --rollback NAME` swaps them "
              "back, `--drop-old NAME` drops them")
        return 0
    finally:
        await pool.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    projections = _select(args)
    return runtime.run(_main(args, settings, projections))
