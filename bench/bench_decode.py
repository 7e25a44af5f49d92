"""Decode throughput: OrderPlaced wire messages -> Event, on one core.

    python bench/bench_decode.py [--messages 200000] [--repeat 3]

Generates OrderPlaced messages (1-4 items) with the simulator, then times
``Decoder.decode`` over all of them, best of ``--repeat`` runs, for two
workloads: ``mixed`` (the simulator's default producer variety: 10% nested
"data" form, 10% RFC 3339 timestamps, 10% string amounts, ~4% legacy v1 that
is upcast) and ``v2_flat`` (every message flat, current version, integer
timestamps). For comparison it times the reference path alone
(``Decoder(fast=False)``, what the fast path falls back to) on ``mixed``, and
counts the messages the fast path decides alone. As yardsticks for the machine
it also times ``orjson.loads`` alone and ``orjson.loads`` plus building the
(frozen) Event without any validation or normalisation. Prints events/s and
writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from projector.contracts import Decoder
from projector.events import Event
from projector.simulator import SimulationOptions, generate

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"


def messages(count: int, **variety: Any) -> list[tuple[bytes, bytes | None]]:
    options = SimulationOptions(orders=count, seed=42, event_types=frozenset({"OrderPlaced"}), **variety)
    return [(r.value, r.key) for r in generate(options)]


def best_of(repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def bench_decode(
    decoder: Decoder, batch: Sequence[tuple[bytes, bytes | None]], repeat: int
) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second), each of the best pass.

    On a shared or oversubscribed machine the wall clock also counts time the
    core spent on other work; CPU time (``time.process_time``) does not, so the
    second figure is the steadier "one core" throughput. On an idle machine
    they agree.
    """
    decode = decoder.decode
    for value, key in batch[:1000]:  # warm the money cache as a running consumer would have
        decode(value, key)
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for value, key in batch:
            decode(value, key)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return len(batch) / best_wall, len(batch) / best_cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000,
                        help="OrderPlaced messages (default 200000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per workload; the best counts (default 3)")
    args = parser.parse_args(argv)

    decoder = Decoder()
    reference = Decoder(fast=False)
    started = time.perf_counter()
    workloads = {
        "mixed": messages(args.messages),
        "v2_flat": messages(args.messages, nested=0.0, iso_timestamps=0.0, v1_order_placed=0.0,
                            string_money=0.0, keyless=0.0),
    }
    print(f"generated 2 x {args.messages:,} OrderPlaced messages in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    for name, batch in workloads.items():  # every message must decode, else the figure means nothing
        bad = [v for v, k in batch if not isinstance(decoder.decode(v, k), Event)]
        if bad:
            raise SystemExit(f"{name}: {len(bad)} messages did not decode, e.g. {bad[0]!r}")
    assert decoder.fast_path is not None
    fast_share = sum(decoder.fast_path.decode(v, k, ()) is not None
                     for v, k in workloads["mixed"]) / len(workloads["mixed"])

    results: dict[str, Any] = {}
    for name, batch in workloads.items():
        gc.collect()
        rate, cpu_rate = bench_decode(decoder, batch, args.repeat)
        results[name] = {
            "events_per_s": round(rate),
            "us_per_event": round(1e6 / rate, 3),
            "events_per_cpu_s": round(cpu_rate),
        }
        print(f"decode {name:8s} {rate:>12,.0f} events/s  ({1e6 / rate:.2f} us/event; "
              f"{cpu_rate:,.0f} per CPU second)")
    gc.collect()
    ref_rate, ref_cpu_rate = bench_decode(reference, workloads["mixed"], args.repeat)
    print(f"reference mixed   {ref_rate:>12,.0f} events/s  ({1e6 / ref_rate:.2f} us/event; "
          f"{ref_cpu_rate:,.0f} per CPU second; the path the fast one falls back to)")
    print(f"fast path share   {fast_share:>12.1%} of mixed decided without the reference path")
    values = [v for v, _ in workloads["mixed"]]
    loads = orjson.loads

    def parse_only() -> None:
        for value in values:
            loads(value)

    def parse_and_event() -> None:
        # The least any decoder returning Events must do: parse, and build the frozen Event.
        for value in values:
            obj = loads(value)
            Event(obj["event_id"], obj["event_type"], obj.get("order_id", ""), epoch, obj, 2)

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    parse_rate = len(values) / best_of(args.repeat, parse_only)
    floor_rate = len(values) / best_of(args.repeat, parse_and_event)
    print(f"parse only        {parse_rate:>12,.0f} messages/s (orjson.loads, for scale)")
    print(f"parse + Event()   {floor_rate:>12,.0f} messages/s (no validation or normalisation)")
    mean_bytes = sum(map(len, values)) / len(values)

    report = {
        "benchmark": "decode",
        "event_type": "OrderPlaced",
        "messages": args.messages,
        "mean_message_bytes": round(mean_bytes, 1),
        "best_of": args.repeat,
        "events_per_s": results["mixed"]["events_per_s"],
        "workloads": results,
        "reference_mixed": {
            "events_per_s": round(ref_rate),
            "us_per_event": round(1e6 / ref_rate, 3),
            "events_per_cpu_s": round(ref_cpu_rate),
        },
        "fast_path_share_mixed": round(fast_share, 4),
        "parse_only_messages_per_s": round(parse_rate),
        "parse_and_event_messages_per_s": round(floor_rate),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
