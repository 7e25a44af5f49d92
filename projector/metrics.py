"""Prometheus metrics of the projector engine.

One :class:`EngineMetrics` per engine, on a registry of its own in tests or
the process-wide default registry in `projector run` / `projector dev`.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STATES = ("LIVE", "CATCHING_UP", "REBUILDING", "PAUSED", "FAILED")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)
_E2E_SAMPLES_PER_BATCH = 64  # observing every event would cost more than it tells


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.applied = Counter("projector_events_applied", "Events applied, by projection and type",
                               ["projection", "event_type"], registry=registry)
        self.dead_lettered = Counter("projector_events_dead_lettered",
                                     "Events written to the dead-letter table, by reason",
                                     ["projection", "reason"], registry=registry)
        self.unknown = Counter("projector_unknown_events_skipped",
                               "Events of types no projection knows, skipped", ["event_type"],
                               registry=registry)
        self.batch_events = Histogram("projector_batch_events", "Records per committed batch",
                                      buckets=_BATCH_BUCKETS, registry=registry)
        self.commit_seconds = Histogram("projector_batch_commit_seconds",
                                        "Time to apply and commit one batch",
                                        buckets=_LATENCY_BUCKETS, registry=registry)
        self.e2e_seconds = Histogram("projector_end_to_end_latency_seconds",
                                     "Event timestamp to commit of its batch (sampled)",
                                     buckets=_LATENCY_BUCKETS, registry=registry)
        self.lag = Gauge("projector_consumer_lag", "Events behind the fetch high watermark",
                         ["projection", "topic", "partition"], registry=registry)
        self.checkpoint = Gauge("projector_checkpoint_offset", "Next offset to apply",
                                ["projection", "topic", "partition"], registry=registry)
        self.state = Gauge("projector_projection_state", "1 for the projection's current state",
                           ["projection", "state"], registry=registry)
        self.refused = Gauge("projector_refused_partitions",
                             "Partitions refused because the log no longer matches the checkpoint",
                             registry=registry)
        self.fenced = Counter("projector_fenced_batches",
                              "Batches abandoned because another instance moved a checkpoint",
                              registry=registry)
        self.rebuild_progress = Gauge("projector_rebuild_progress_ratio",
                                      "Fraction of the history a running rebuild has applied",
                                      ["projection"], registry=registry)

    def batch_committed(self, records: int, seconds: float,
                        applied: Mapping[tuple[str, str], int],
                        letters: Iterable[tuple[str, str]], unknown: Mapping[str, int],
                        event_times: list[datetime], now: datetime) -> None:
        self.batch_events.observe(records)
        self.commit_seconds.observe(seconds)
        for (projection, event_type), n in applied.items():
            self.applied.labels(projection, event_type).inc(n)
        for (projection, reason), n in Tally(letters).items():
            self.dead_lettered.labels(projection, reason).inc(n)
        for event_type, n in unknown.items():
            self.unknown.labels(event_type).inc(n)
        if event_times:
            step = max(1, len(event_times) // _E2E_SAMPLES_PER_BATCH)
            for at in event_times[::step]:
                self.e2e_seconds.observe(max(0.0, (now - at).total_seconds()))

    def positions(self, lag: Mapping[tuple[str, str, int], int],
                  checkpoints: Mapping[tuple[str, str, int], int]) -> None:
        for (projection, topic, partition), value in lag.items():
            self.lag.labels(projection, topic, str(partition)).set(value)
        for (projection, topic, partition), value in checkpoints.items():
            self.checkpoint.labels(projection, topic, str(partition)).set(value)

    def states(self, states: Mapping[str, str], refused: int) -> None:
        for projection, current in states.items():
            for state in STATES:
                self.state.labels(projection, state).set(1 if state == current else 0)
        self.refused.set(refused)
