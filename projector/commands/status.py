"""`projector status`: every projection's state, checkpoints, lag and dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import asyncpg

from projector.settings import Settings
from projector.status import ProjectionStatus, read_status

NAME = "status"
HELP = "show each projection: version, state, checkpoints, lag, events/s, dead letters"

STALE_HEARTBEAT_S = 30.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--max-lag", type=int, default=None, metavar="EVENTS",
                        help="exit 1 when a projection's lag exceeds EVENTS")


def _as_json(p: ProjectionStatus) -> dict[str, Any]:
    data = asdict(p)
    data["lag"] = p.lag
    for part, raw in zip(data["partitions"], p.partitions, strict=True):
        part["lag"] = raw.lag
    return data


def render(statuses: list[ProjectionStatus]) -> str:
    lines: list[str] = []
    for p in statuses:
        beat = ("never" if p.heartbeat_age_s is None else f"{p.heartbeat_age_s:.0f} s ago")
        stale = p.heartbeat_age_s is None or p.heartbeat_age_s > STALE_HEARTBEAT_S
        lines.append(
            f"{p.name}  v{p.version}  {p.state}{'  (no projector running?)' if stale else ''}")
        lines.append(
            f"  lag {p.lag:,} events   {p.events_per_second:,.0f} events/s   last event "
            f"{p.last_event_at.isoformat() if p.last_event_at else '-'}   heartbeat {beat}   "
            f"dead letters {p.dead_letters:,}")
        if p.partial:
            lines.append("  PARTIAL: rebuilt from a log that no longer started at offset 0")
        if p.rebuild:
            r = p.rebuild
            total = r.get("total") or 0
            pct = f"{100 * (r.get('done') or 0) / total:.0f}%" if total else "-"
            eta = "-" if r.get("eta_s") is None else f"{r['eta_s']:,.0f} s"
            lines.append(f"  REBUILDING #{r['generation']}: {r.get('phase')} "
                         f"{r.get('done', 0):,}/{total:,} ({pct})  "
                         f"{r.get('events_per_second', 0):,.0f} events/s  ETA {eta}")
        if p.partitions:
            width = max(len(x.topic) for x in p.partitions)
            lines.append(f"  {'topic':<{width}}  part  {'checkpoint':>10}  {'end':>10}  {'lag':>8}")
            for x in p.partitions:
                end = "-" if x.end_offset is None else f"{x.end_offset:,}"
                lag = "-" if x.lag is None else f"{x.lag:,}"
                cp = "start" if x.checkpoint < 0 else f"{x.checkpoint:,}"
                note = f"  REFUSED: {x.refused}" if x.refused else ""
                lines.append(f"  {x.topic:<{width}}  {x.partition:>4}  {cp:>10}  {end:>10}  "
                             f"{lag:>8}{note}")
        lines.append("")
    return "\n".join(lines)


def exit_code(statuses: list[ProjectionStatus], max_lag: int | None) -> int:
    if any(p.state == "FAILED" for p in statuses):
        return 1
    if max_lag is not None and any(p.lag > max_lag for p in statuses):
        return 1
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    async def main() -> list[ProjectionStatus]:
        conn = await asyncpg.connect(settings.require_database())
        try:
            return await read_status(conn)
        finally:
            await conn.close()

    statuses = asyncio.run(main())
    if args.json:
        print(json.dumps([_as_json(p) for p in statuses], default=str, indent=2))
    else:
        sys.stdout.write(render(statuses) if statuses else "no projections: run `projector migrate`\n")
    return exit_code(statuses, args.max_lag)
