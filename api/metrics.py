"""Prometheus metrics of the API process, served on its GET /metrics.

One :class:`ApiMetrics` per app, on a registry of its own (several apps live in
one test process; ``projector serve`` has one). Names used by ``deploy/``:
``api_graphql_requests_total{operation,type,outcome}`` and
``api_graphql_request_seconds{type}``.

On the query hot path a request costs one counter increment and one histogram
observation: the labelled children are kept in a dict, so prometheus-client's
``labels()`` (a lock and a tuple per call) is paid once per label set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from graphql import GraphQLError, OperationDefinitionNode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from api.limits import DOCUMENT_CACHE_SIZE

# Operation names come from clients: past this many distinct ones, further
# names are counted as "other" so that a client cannot grow the label set.
MAX_OPERATION_LABELS = 200
MAX_OPERATION_NAME = 64
ANONYMOUS = "anonymous"
OTHER = "other"

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)
def operation_of(document_text: str | None, operation_name: str | None) -> tuple[str | None, str]:
    """(name, type) of the operation a request runs: type query, mutation,
    subscription or unknown (a document that does not parse or names no such operation)."""
    from graphql import parse  # the parse is cached with the answer; only new texts pay it

    if not isinstance(document_text, str):
        return operation_name, "unknown"
    try:
        document = parse(document_text, no_location=True, max_tokens=2_000)
    except GraphQLError:
        return operation_name, "unknown"
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    for op in operations:
        name = op.name.value if op.name else None
        if (operation_name is None and len(operations) == 1) or name == operation_name:
            return name, op.operation.value
    return operation_name, "unknown"


class ApiMetrics:
    """The API's metrics on ``registry`` (a fresh one by default), process metrics included."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=registry)  # process_resident_memory_bytes and friends
        self.requests = Counter(
            "api_graphql_requests", "GraphQL operations completed, by operation name, type and outcome",
            ["operation", "type", "outcome"], registry=registry)
        self.request_seconds = Histogram(
            "api_graphql_request_seconds", "Time to answer a query or mutation (subscriptions: to set up)",
            ["type"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.connections = Gauge("api_websocket_connections", "Open GraphQL WebSocket connections",
                                 ["protocol"], registry=registry)
        self.connections_dropped = Counter(
            "api_websocket_connections_dropped", "Connections the server closed on its own, by reason",
            ["reason"], registry=registry)
        self.subscriptions = Gauge("api_subscriptions", "Active subscriptions, by field",
                                   ["field"], registry=registry)
        self.push_seconds = Histogram(
            "api_subscription_push_seconds",
            "From the change notification's arrival to the subscription frame written to the socket",
            buckets=_PUSH_BUCKETS, registry=registry)
        self.coalesced = Counter(
            "api_subscription_messages_coalesced",
            "Row states replaced by a newer state of the same row before a slow subscriber took them",
            registry=registry)
        self.dropped = Counter(
            "api_subscription_messages_dropped",
            "Row states not delivered because their subscription or connection was ended, by reason",
            ["reason"], registry=registry)
        self.buffered = Gauge("api_subscription_buffered_rows",
                              "Row states waiting in subscription buffers, all subscriptions",
                              registry=registry)
        self.buffered_max = Gauge("api_subscription_buffered_rows_max",
                                  "Row states waiting in the fullest subscription buffer", registry=registry)
        self.feed_rounds = Counter("api_feed_reads",
                                   "Change-feed read rounds (one per burst of notifications)",
                                   registry=registry)
        self.feed_read_seconds = Histogram(
            "api_feed_read_seconds", "Time of one change-feed round (snapshot, reads, dispatch)",
            buckets=_REQUEST_BUCKETS, registry=registry)
        self.feed_rows = Counter("api_feed_rows", "Rows the change feed read, by table", ["table"],
                                 registry=registry)
        self.feed_reconnects = Counter("api_feed_reconnects",
                                       "Times the change feed's LISTEN connection was re-established",
                                       registry=registry)
        self.feed_resyncs = Counter("api_feed_resyncs",
                                    "Tables swapped under the feed by a rebuild (subscribers re-read)",
                                    ["table"], registry=registry)
        self._children: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._timers: dict[str, Callable[[float], None]] = {}
        self._names: set[str] = set()

    def _operation_label(self, name: str | None) -> str:
        if not name:
            return ANONYMOUS
        if name in self._names:
            return name
        if len(self._names) >= MAX_OPERATION_LABELS or len(name) > MAX_OPERATION_NAME:
            return OTHER
        self._names.add(name)
        return name

    def request(self, name: str | None, kind: str, ok: bool, seconds: float | None) -> None:
        """Count one completed operation; ``seconds`` None: do not time it (a subscription's life)."""
        outcome = "ok" if ok else "error"
        inc = self._children.get((name or "", kind, outcome))
        if inc is None:
            child = self.requests.labels(self._operation_label(name), kind, outcome)
            inc = self._children[(name or "", kind, outcome)] = child.inc
        inc()
        if seconds is not None:
            observe = self._timers.get(kind)
            if observe is None:
                observe = self._timers[kind] = self.request_seconds.labels(kind).observe
            observe(seconds)

    def watch_buffers(self, sizes: Callable[[], list[int]]) -> None:
        """Compute the buffered-rows gauges from ``sizes()`` at each scrape."""
        self.buffered.set_function(lambda: float(sum(sizes())))
        self.buffered_max.set_function(lambda: float(max(sizes(), default=0)))

