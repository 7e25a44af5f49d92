"""`projector simulate`: publish a deterministic stream of simulated order events."""

from __future__ import annotations

import argparse
import asyncio
import sys

from projector.settings import Settings
from projector.simulator import PublishStats, SimulationOptions, generate, publish, topic_map_for
from projector.topics import ensure_topics

NAME = "simulate"
HELP = "publish simulated order events (realistic mix, optional duplicates/invalid/reordering)"


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction 0..1, got {raw}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {raw}")
    return value


def _rate(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected events per second > 0, got {raw}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders", type=_positive_int, default=1000, metavar="N",
                        help="orders to simulate, about 6 events each (default 1000)")
    parser.add_argument("--rate", type=_rate, default=None, metavar="EVENTS_PER_S",
                        help="cap on records per second (default: as fast as the broker takes)")
    parser.add_argument("--seed", type=int, default=1,
                        help="random seed; the same seed sends the same events, with the same "
                             "event ids (default 1)")
    parser.add_argument("--duplicates", type=_fraction, default=0.0, metavar="FRACTION",
                        help="re-send this fraction of events, identical, a little later")
    parser.add_argument("--invalid", type=_fraction, default=0.0, metavar="FRACTION",
                        help="add an invalid record (bad JSON, schema violation, unknown type, "
                             "wrong key...) next to this fraction of events")
    parser.add_argument("--reorder", action="store_true",
                        help="shuffle records within a small window, so an order's events can "
                             "arrive out of causal order")
    parser.add_argument("--topic-prefix", default="", metavar="PREFIX",
                        help="put PREFIX before every topic name (the consumer's "
                             "PROJECTOR_TOPICS must match)")
    parser.add_argument("--no-create-topics", dest="create_topics", action="store_false",
                        help="do not create missing topics first")


def run(args: argparse.Namespace, settings: Settings) -> int:
    bootstrap = settings.require_kafka()
    options = SimulationOptions(
        orders=args.orders,
        seed=args.seed,
        duplicates=args.duplicates,
        invalid=args.invalid,
        reorder=args.reorder,
        topic_map=topic_map_for(settings.topics),
        topic_prefix=args.topic_prefix,
    )
    topics = sorted({options.topic_of(t) for t in options.topic_map or {}})
    interactive = sys.stderr.isatty()

    def show(stats: PublishStats) -> None:
        sys.stderr.write(
            f"\r{stats.sent:>12,} records  {stats.rate:>10,.0f} records/s  "
            f"{stats.elapsed_s:>7.1f} s"
        )
        sys.stderr.flush()

    async def main() -> PublishStats:
        if args.create_topics:
            await ensure_topics(bootstrap, topics, settings.topic_partitions)
        return await publish(
            generate(options), bootstrap, rate=args.rate, progress=show if interactive else None
        )

    stats = asyncio.run(main())
    if interactive:
        sys.stderr.write("\n")
    print(
        f"published {stats.sent:,} records ({stats.events:,} events, {stats.duplicates:,} "
        f"duplicates, {stats.invalid:,} invalid) for {args.orders:,} orders to {len(topics)} "
        f"topics in {stats.elapsed_s:.1f} s ({stats.rate:,.0f} records/s)"
    )
    return 0
