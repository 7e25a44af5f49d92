"""`projector dlq`: list, show, replay and purge dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, date, datetime

import asyncpg

from projector import dlq
from projector.errors import ConfigError
from projector.settings import Settings

NAME = "dlq"
HELP = "inspect, replay and purge dead letters (events that could not be applied)"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="list dead letters, oldest first")
    ls.add_argument("--reason", help="only this reason code (e.g. schema_violation)")
    ls.add_argument("--projection", help="only this projection ('*': rejected by the decoder)")
    ls.add_argument("--limit", type=int, default=50, help="at most N entries (default 50)")
    ls.add_argument("--json", action="store_true", help="JSON lines")
    show = sub.add_parser("show", help="one entry, whole")
    show.add_argument("id", type=int)
    rp = sub.add_parser("replay", help="decode and project again; success removes the entry")
    rp.add_argument("ids", type=int, nargs="*", metavar="ID")
    rp.add_argument("--all", action="store_true", help="every entry (with --reason: of it)")
    rp.add_argument("--reason", help="with --all: only this reason code")
    pg = sub.add_parser("purge", help="delete entries first seen before a date")
    pg.add_argument("--before", required=True, help="YYYY-MM-DD (UTC) or an ISO timestamp")


def _parse_before(raw: str) -> datetime:
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(f"--before {raw!r}: expected YYYY-MM-DD or an ISO timestamp") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    conn = await asyncpg.connect(settings.require_database())
    try:
        if args.dlq_command == "list":
            entries = await dlq.list_entries(conn, reason=args.reason,
                                             projection=args.projection, limit=args.limit)
            for e in entries:
                if args.json:
                    print(json.dumps(dlq.as_dict(e, 512)))
                else:
                    print(f"{e.id:>8}  {e.first_seen_at:%Y-%m-%d %H:%M:%S}  {e.projection:<9} "
                          f"{e.reason:<20} {e.topic}[{e.partition}]@{e.offset}  "
                          f"{(e.event_id or '-')[:40]}  {e.error[:60]}")
            if not entries and not args.json:
                print("no dead letters")
            return 0
        if args.dlq_command == "show":
            entry = await dlq.get_entry(conn, args.id)
            if entry is None:
                raise ConfigError(f"no dead letter with id {args.id}")
            print(json.dumps(dlq.as_dict(entry, 1 << 20), indent=2))
            return 0
        if args.dlq_command == "replay":
            if bool(args.ids) == bool(args.all):
                raise ConfigError("give entry ids, or --all (optionally with --reason)")
            from projector.contracts import decode
            from projector.projections import ALL

            result = await dlq.replay(conn, ALL, decode, ids=args.ids or None,
                                      reason=args.reason)
            print(f"replayed {len(result.replayed)}, still failing {len(result.failed)}")
            for entry_id, error in sorted(result.failed.items()):
                print(f"  {entry_id}: {error[:200]}")
            return 0 if not result.failed else 1
        if args.dlq_command == "purge":
            n = await dlq.purge(conn, _parse_before(args.before))
            print(f"purged {n} dead letter(s)")
            return 0
    finally:
        await conn.close()
    return 2


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))
