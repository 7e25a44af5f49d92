"""Shared pieces of the benchmarks: the embedded stack and the results file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from projector.embedded import EmbeddedBroker, EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Stack:
    admin_url: str
    bootstrap: str


@contextmanager
def stack(durable: bool = True) -> Iterator[Stack]:
    """Embedded PostgreSQL (durable: real fsync, as in production) and broker,
    unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS say otherwise."""
    base = Path(tempfile.mkdtemp(prefix="projector-bench-"))
    os.chmod(base, 0o755)
    pg = broker = None
    try:
        admin = os.environ.get("DATABASE_URL")
        if not admin:
            pg = EmbeddedPostgres(base / "pg", durable=durable, preferred_port=0)
            admin = pg.start()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = EmbeddedBroker(base, preferred_port=0)
            bootstrap = broker.start()
        yield Stack(admin, bootstrap)
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.stop()
        # A 1M-event run leaves ~2 GB of PostgreSQL data: runs after runs filled the disk.
        shutil.rmtree(base, ignore_errors=True)


def host_speed_ms() -> float:
    """Milliseconds a fixed pure-Python loop takes (best of five): the machine's speed now.

    The VM's neighbours change how fast the same work runs (by 2x within an hour on the
    reference machine); printed beside a figure, it tells a slow host from slow code.
    """
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def postgres_cpu_s() -> float | None:
    """CPU seconds used so far by this machine's PostgreSQL processes, those that ended
    included (the postmaster's children times); None when none is local."""
    total, found = 0.0, False
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] == "postgres" and times is not None:
            found = True
            total += times.user + times.system + times.children_user + times.children_system
    return total if found else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_results(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    figures = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               **figures}
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return path
