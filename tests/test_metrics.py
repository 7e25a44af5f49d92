"""The projector's /metrics, /healthz and /readyz, scraped from a real `projector run`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
from enginekit import migrated_pool, send, simulate
from prometheus_client.parser import text_string_to_metric_families

from projector.embedded import free_port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, val) in ls for k, val in labels.items()))


async def test_projector_metrics_match_what_was_sent(
    pg_dsn: str, kafka_bootstrap: str, topics: tuple[str, ...], tmp_path: Path
) -> None:
    records = simulate(topics, orders=300, seed=13, invalid=0.05, duplicates=0.05)
    await send(records, kafka_bootstrap)
    pool = await migrated_pool(pg_dsn)
    await pool.close()
    port = free_port()
    env = dict(os.environ, DATABASE_URL=pg_dsn, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
               PROJECTOR_TOPICS=",".join(topics), PROJECTOR_GROUP_ID=f"m-{uuid.uuid4().hex[:6]}",
               PROJECTOR_SESSION_TIMEOUT_MS="6000", PROJECTOR_METRICS_PORT=str(port))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "projector.cli", "run"], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            for _ in range(300):
                await asyncio.sleep(0.2)
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    ready = await client.get(f"{base}/readyz")
                    samples = _samples((await client.get(f"{base}/metrics")).text)
                except httpx.TransportError:
                    continue
                if ready.status_code == 200 and _total(samples, "projector_consumer_lag") == 0 \
                        and _total(samples, "projector_checkpoint_offset") >= 2 * len(records):
                    break
            assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
            assert (await client.get(f"{base}/readyz")).status_code == 200

        valid = sum(1 for r in records if r.event is not None)  # duplicates included
        invalid = Counter(r.expect.value for r in records if r.expect is not None)
        unknown = invalid.pop("unknown_event_type", 0)
        for projection in ("orders", "timeline"):
            assert _total(samples, "projector_events_applied_total", projection=projection) == valid
            assert _total(samples, "projector_consumer_lag", projection=projection) == 0
            assert _total(samples, "projector_checkpoint_offset",
                          projection=projection) == len(records)
            assert _total(samples, "projector_projection_state", projection=projection,
                          state="LIVE") == 1
        for reason, n in invalid.items():
            assert _total(samples, "projector_events_dead_lettered_total", reason=reason) == n
        assert _total(samples, "projector_unknown_events_skipped_total") == unknown
        assert _total(samples, "projector_batch_commit_seconds_count") >= 1
        assert _total(samples, "projector_end_to_end_latency_seconds_count") >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
