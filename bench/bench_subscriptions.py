"""Subscription latency and memory: Kafka produce -> projector -> change feed -> WebSocket frame.

    python bench/bench_subscriptions.py [--quick] [--load 2000] [--connections 100]
        [--per-connection 10] [--idle 10000] [--poll-timeout-ms 200] [--tracer-linger-ms 5]
        [--load-linger-ms 100] [--step-s 2] [--fetch-max-wait-ms N]

On this machine, in three processes besides the embedded PostgreSQL (durable)
and broker: the projector (``projector.engine.Engine``, all projections), the
API (uvicorn, uvloop, httptools: ``api.app.create_app``) and this driver.

1. Background load: the simulator's orders published at ``--load`` events/s
   for the whole run (nobody subscribes to them), from a process of its own:
   in the driver's event loop, sending 2,000 events/s delayed the frames it
   timestamps. Its producer lingers ``--load-linger-ms`` (100): the embedded
   broker keeps each record batch as an object and re-reads a partition's list
   of them on every fetch, so its CPU grows with the batches stored (at 2,000
   events/s, 0.17 -> 0.98 of a core over 80 s with a 20 ms linger, 0.09 ->
   0.19 with 100 ms), and with 20 ms the run measured the broker's slowdown
   more than the projector and the API. Apache Kafka indexes its segments.
2. Latency: ``--connections`` WebSocket connections (graphql-transport-ws)
   with ``--per-connection`` ``orderUpdated(orderId)`` subscriptions each, one
   per tracer order. Tracer orders get their events one step at a time (one
   event per order per step, steps STEP_S apart), each timed from the
   producer's ``send()`` (so the producer's ``--tracer-linger-ms`` is in the
   figure); a frame showing ``eventCount = k`` closes the timing of that
   order's k-th event.
3. Memory: ``--idle`` more subscriptions (50 per connection) on orders that
   never change; the API process's RSS is read then.

Prints p50/p99/max latency, where it goes (each tracer event's age when the
broker acknowledged it, when the projector cut its batch and when that batch
committed: ``TimedEngine``), frames received vs expected, the API's CPU and
RSS, and writes bench/results/subscriptions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import host_speed_ms, percentile, stack, write_results

from projector.events import DEFAULT_TOPICS

HERE = str(Path(__file__).resolve())
STEP_S = 2.0  # between two events of one tracer order: far above any latency measured
SUBSCRIBE = "subscription($id: ID!) { orderUpdated(orderId: $id) { orderId status eventCount } }"
TRACER_SEED = 77
TRACER_KEYS = f"order-{TRACER_SEED}-".encode()  # the simulator's order ids carry its seed


def _default_fetch_max_wait_ms() -> int:
    from projector.settings import Settings

    return Settings().fetch_max_wait_ms


# --- the two servers, each in a process of its own ----------------------------------------


async def _lag_routine(lags: list[float]) -> None:
    # How late a 10 ms timer fires: time the event loop (or the CPU) was not ours.
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - started - 0.01)


def _tracer_stamps(entries: Any) -> list[float]:
    """The producer timestamps (s) of the tracer records among a batch's entries."""
    return [entry[0] / 1000 for part in entries.values() for entry in part
            if (entry[1].key or b"").startswith(TRACER_KEYS)]


async def run_engine(dsn: str, bootstrap: str, topics: list[str], poll_timeout_ms: int,
                     fetch_max_wait_ms: int) -> None:
    from projector.db import create_pool
    from projector.engine import Engine
    from projector.gc_tuning import tune_gc
    from projector.projections import ALL
    from projector.settings import Settings

    settings = Settings(database_url=dsn, kafka_bootstrap_servers=bootstrap, topics=tuple(topics),
                        poll_timeout_ms=poll_timeout_ms)
    if fetch_max_wait_ms > 0:
        settings = settings.with_(fetch_max_wait_ms=fetch_max_wait_ms)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    stages: dict[str, list[float]] = {"fetched": [], "cut": [], "committed": []}
    fetches = [0]  # getmany calls that returned records

    class TimedEngine(Engine):
        """Times the tracer records (by their key) from their producer timestamp to the
        moment the consumer hands them over, their batch is cut, and it commits: where the
        latency goes."""

        async def _fetch(self, consumer: Any) -> Any:
            fetched = await super()._fetch(consumer)
            now = time.time()
            if fetched:
                fetches[0] += 1
            stages["fetched"] += [now - rec.timestamp / 1000 for recs in (fetched or {}).values()
                                  for rec in recs if (rec.key or b"").startswith(TRACER_KEYS)]
            return fetched

        async def _prepare(self, consumer: Any, entries: Any) -> Any:
            now = time.time()
            stages["cut"] += [now - t for t in _tracer_stamps(entries)]
            return await super()._prepare(consumer, entries)

        async def _finish(self, consumer: Any, batch: Any, stopping: asyncio.Event) -> bool:
            committed = await super()._finish(consumer, batch, stopping)
            now = time.time()
            stages["committed"] += [now - t for t in _tracer_stamps(batch.records)]
            return committed

    engine = TimedEngine(settings, pool, ALL, group_id=None)
    tune_gc()  # as `projector run` does
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    lags: list[float] = []
    probe = asyncio.create_task(_lag_routine(lags))
    started = time.monotonic()
    await engine.run(stopping)
    probe.cancel()
    await pool.close()
    commits = sorted(c[0] for c in engine.commit_log)
    sizes = sorted(c[1] for c in engine.commit_log)
    print(json.dumps({"events": engine.events_applied, "batches": engine.batches_committed,
                      "commit_p50_ms": 1000 * percentile(commits, 0.5),
                      "commit_p99_ms": 1000 * percentile(commits, 0.99),
                      "batch_p50_records": percentile([float(s) for s in sizes], 0.5),
                      "fetches_per_s": fetches[0] / (time.monotonic() - started),
                      "loop_lag_p50_ms": 1000 * percentile(lags, 0.5),
                      "loop_lag_p99_ms": 1000 * percentile(lags, 0.99),
                      **{f"tracer_{k}_{q}_ms": 1000 * percentile(v, p) for k, v in stages.items()
                         for q, p in (("p50", 0.5), ("p99", 0.99))}}), flush=True)


def run_api(dsn: str, port: int) -> None:
    """As `projector serve` runs it (api.server.serve_api), until SIGTERM or SIGINT."""
    from api.server import serve_api
    from projector.runtime import run
    from projector.settings import Settings

    async def serve() -> None:
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
        lags: list[float] = []
        probe = asyncio.create_task(_lag_routine(lags))
        import gc

        pauses: dict[int, list[float]] = defaultdict(list)
        started_at = [0.0]

        def collecting(phase: str, info: dict[str, int]) -> None:
            # The cyclic collector stops the event loop while it walks the heap.
            if phase == "start":
                started_at[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append(time.perf_counter() - started_at[0])

        gc.callbacks.append(collecting)
        try:
            await serve_api(Settings(database_url=dsn, api_port=port, log_level="WARNING"), stopping)
        finally:
            probe.cancel()
            print(f"api event loop lag: p50 {1000 * percentile(lags, 0.5):.1f} ms, p99 "
                  f"{1000 * percentile(lags, 0.99):.1f} ms, max {1000 * max(lags, default=0.0):.1f} ms",
                  flush=True)
            for generation, times in sorted(pauses.items()):
                print(f"api gc generation {generation}: {len(times)} collections, max "
                      f"{1000 * max(times):.1f} ms, total {sum(times):.2f} s", flush=True)

    run(serve())  # as `projector serve` runs it (uvloop when installed)


# --- the driver ----------------------------------------------------------------------------


@dataclass
class Tracking:
    sent: dict[tuple[str, int], float] = field(default_factory=dict)  # (order, k-th event) -> sent at
    latencies: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)  # send() -> the broker's acknowledgement
    frames: int = 0
    unmatched: int = 0


def _cpu_by_role(roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds used so far, by role: ``roles`` (pid -> name), this driver, the embedded
    PostgreSQL and broker (by process name), and "other" (everything else on the machine)."""
    mine = {c.pid for c in psutil.Process().children(recursive=True)}
    used: dict[str, float] = defaultdict(float)
    for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        pid, name = proc.info["pid"], proc.info["name"] or ""
        if pid in roles:
            role = roles[pid]
        elif pid == os.getpid():
            role = "driver"
        elif pid in mine:
            role = "postgres" if "postgres" in name else "broker" if "tansu" in name else "driver"
        else:
            role = "other"
        used[role] += times.user + times.system
    return used


async def run_load(bootstrap: str, topics: list[str], orders: int, rate: int, linger_ms: int) -> None:
    """The background load: ``orders`` simulated orders' events at ``rate`` events/s, sent by
    a producer lingering ``linger_ms``."""
    from projector.simulator import SimulationOptions, generate, publish, topic_map_for

    background = list(generate(SimulationOptions(orders=orders, seed=78, topic_map=topic_map_for(topics))))
    print("ready", flush=True)
    await publish(background, bootstrap, rate=rate, linger_ms=linger_ms)


def _spawn(role: str, *args: str) -> subprocess.Popen[bytes]:
    """This script in a process of its own, as the projector, the API or the load."""
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, HERE, "--role", role, *args], env=env,
                            stdout=subprocess.PIPE if role in ("engine", "load") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _database(admin_url: str) -> str:
    from projector.db import migrate
    from projector.projections import ALL

    name = f"bench_subs_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = f"{admin_url.rpartition('/')[0]}/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, ALL)
    finally:
        await conn.close()
    return dsn


def _stories(topics: Sequence[str], orders: int, seed: int) -> list[list[Any]]:
    """Each simulated order's valid records, in order (no duplicates, invalid or keyless ones)."""
    from projector.simulator import SimulationOptions, generate, topic_map_for

    by_order: dict[str, list[Any]] = defaultdict(list)
    options = SimulationOptions(orders=orders, seed=seed, topic_map=topic_map_for(topics), keyless=0.0)
    for record in generate(options):
        if record.event is not None:
            by_order[record.event.order_id].append(record)
    return list(by_order.values())


@contextlib.asynccontextmanager
async def _subscribed(url: str, order_ids: Sequence[str], tracking: Tracking | None,
                      ready: list[int]) -> AsyncIterator[None]:
    """One connection with a subscription per order id; frames timed into ``tracking``."""
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
                                  max_size=None, ping_interval=None, compression=None) as ws:
        await ws.send('{"type":"connection_init"}')
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        for i, order_id in enumerate(order_ids):
            await ws.send(orjson.dumps({"type": "subscribe", "id": str(i), "payload": {
                "query": SUBSCRIBE, "variables": {"id": order_id}}}).decode())
        ready.append(len(order_ids))

        async def read() -> None:
            async for raw in ws:
                now = time.monotonic()
                message = orjson.loads(raw)
                if message["type"] == "ping":
                    await ws.send('{"type":"pong"}')
                    continue
                if message["type"] != "next" or tracking is None:
                    continue
                row = message["payload"]["data"]["orderUpdated"]
                tracking.frames += 1
                sent = tracking.sent.get((row["orderId"], row["eventCount"]))
                if sent is None:
                    tracking.unmatched += 1
                else:
                    tracking.latencies.append(now - sent)

        reader = asyncio.create_task(read())
        try:
            yield
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.exceptions.ConnectionClosed):
                await reader


async def _tracers(bootstrap: str, stories: list[list[Any]], tracking: Tracking, linger_ms: int,
                   step_s: float) -> int:
    """Each tracer order's k-th event in step k, the steps ``step_s`` apart; returns events sent.
    ``linger_ms``: the producer's, timed in (each event from its ``send()``)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, acks="all")
    await producer.start()
    sent = 0
    try:
        for step in range(max(len(s) for s in stories)):
            started = time.monotonic()
            batch = [(s[step], step + 1) for s in stories if step < len(s)]
            for i, (record, k) in enumerate(batch):
                # Spread over the step: a steady trickle, not a burst.
                ahead = started + i * (step_s * 0.8) / len(batch) - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                at = tracking.sent[(record.event.order_id, k)] = time.monotonic()
                acked = await producer.send(record.topic, record.value, key=record.key,
                                            headers=list(record.headers))
                acked.add_done_callback(lambda _, at=at: tracking.acked.append(time.monotonic() - at))
                sent += 1
            await asyncio.sleep(max(0.0, started + step_s - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _push_quantiles(port: int, name: str = "api_subscription_push_seconds") -> tuple[float, float]:
    """p50 and p99 (ms, bucket upper bounds) of one of the API's histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    buckets = [(float(s.labels["le"]), s.value) for f in text_string_to_metric_families(text)
               if f.name == name for s in f.samples if s.name.endswith("_bucket")]
    total = max((v for _, v in buckets), default=0.0)

    def quantile(q: float) -> float:
        return next((1000 * le for le, v in sorted(buckets) if total and v >= q * total), float("nan"))

    return quantile(0.5), quantile(0.99)


async def _watch_lag(port: int, lags: list[int]) -> None:
    """The projector's lag (events behind the log ends), once a second, from the API."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        while True:
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
                body = (await http.post("/graphql", json={"query": "{ projections { name lag } }"})).json()
                lags.append(max(p["lag"] or 0 for p in body["data"]["projections"]))
            await asyncio.sleep(1)


async def _api_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("the API process exited at start")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit("the API did not become ready")


async def drive(args: argparse.Namespace, admin_url: str, bootstrap: str) -> dict[str, Any]:
    from projector.topics import ensure_topics

    topics = tuple(f"bench-{uuid.uuid4().hex[:6]}.{t}" for t in DEFAULT_TOPICS)
    await ensure_topics(bootstrap, topics)
    dsn = await _database(admin_url)
    # Made before the clock starts: generating them costs the driver more CPU than sending.
    tracers = _stories(topics, args.connections * args.per_connection, seed=TRACER_SEED)
    duration_s = args.step_s * (max(len(s) for s in tracers) + 3) + 20 + args.idle / 250
    load: subprocess.Popen[bytes] | None = None
    port = free_port()
    figures: dict[str, Any] = {}
    engine = _spawn("engine", dsn, bootstrap, ",".join(topics), str(args.poll_timeout_ms),
                    str(args.fetch_max_wait_ms))
    api = _spawn("api", dsn, str(port))
    url = f"ws://127.0.0.1:{port}/graphql"
    try:
        await _api_ready(port, api)
        api_proc = psutil.Process(api.pid)
        load = _spawn("load", bootstrap, ",".join(topics), str(int(args.load * duration_s / 5.0) + 1000),
                      str(args.load), str(args.load_linger_ms))
        assert load.stdout is not None
        # It publishes once its events are generated.
        if (await asyncio.to_thread(load.stdout.readline)).strip() != b"ready":
            raise SystemExit("the load process failed to start")
        print(f"background load: {args.load:,} events/s; warming up", flush=True)
        await asyncio.sleep(8)

        tracking = Tracking()
        ready: list[int] = []
        ids = [s[0].event.order_id for s in tracers]
        async with contextlib.AsyncExitStack() as stack_:
            for c in range(args.connections):
                chunk = ids[c * args.per_connection:(c + 1) * args.per_connection]
                await stack_.enter_async_context(_subscribed(url, chunk, tracking, ready))
            await asyncio.sleep(1)
            print(f"{sum(ready):,} subscriptions over {len(ready)} connections; tracer events for "
                  f"{len(tracers):,} orders, one per order every {args.step_s:g} s", flush=True)
            cpu0, t0 = api_proc.cpu_times(), time.monotonic()
            roles = {engine.pid: "projector", api.pid: "api", load.pid: "load"}
            machine0 = _cpu_by_role(roles)
            lags: list[int] = []
            watcher = asyncio.create_task(_watch_lag(port, lags))
            sent = await _tracers(bootstrap, tracers, tracking, args.tracer_linger_ms, args.step_s)
            watcher.cancel()
            await asyncio.sleep(3)
            push = await _push_quantiles(port)
            rounds = await _push_quantiles(port, "api_feed_read_seconds")
            cpu1, t1 = api_proc.cpu_times(), time.monotonic()
            machine1 = _cpu_by_role(roles)
            api_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
            cores = {role: (machine1[role] - machine0.get(role, 0.0)) / (t1 - t0) for role in machine1}
            other_cores = cores.pop("other", 0.0)
            run_cores = sum(cores.values())
            rss_busy = api_proc.memory_info().rss

            print(f"opening {args.idle:,} idle subscriptions", flush=True)
            idle_ready: list[int] = []
            opened = time.monotonic()
            for c in range(0, args.idle, 50):
                chunk = [f"idle-{i}" for i in range(c, min(args.idle, c + 50))]
                await stack_.enter_async_context(_subscribed(url, chunk, None, idle_ready))
            await asyncio.sleep(5)
            rss_idle = api_proc.memory_info().rss
            subscribed_s = time.monotonic() - opened
        lat = sorted(tracking.latencies)
        figures.update({
            "load_events_per_s": args.load,
            "subscriptions": sum(ready), "connections": len(ready),
            "tracer_events_sent": sent, "frames": tracking.frames, "matched": len(lat),
            "unmatched_frames": tracking.unmatched,
            "latency_p50_ms": 1000 * percentile(lat, 0.5), "latency_p99_ms": 1000 * percentile(lat, 0.99),
            "latency_max_ms": 1000 * lat[-1] if lat else None,
            "projector_lag_max": max(lags, default=None), "projector_lag_median": percentile(
                [float(x) for x in lags], 0.5),
            "api_push_p50_ms": push[0], "api_push_p99_ms": push[1],
            "feed_round_p50_ms": rounds[0], "feed_round_p99_ms": rounds[1],
            "api_cpu_cores_during_tracers": api_cpu,
            "run_cpu_cores": run_cores, "other_processes_cpu_cores": other_cores,
            "cpu_cores_by_process": cores,
            "machine_cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
            "api_rss_mb_busy": rss_busy / 2**20,
            "idle_subscriptions": sum(idle_ready) + sum(ready),
            "idle_connections": len(idle_ready) + len(ready),
            "idle_subscribe_s": subscribed_s,
            "api_rss_mb_with_idle": rss_idle / 2**20,
            "poll_timeout_ms": args.poll_timeout_ms,
            "fetch_max_wait_ms": args.fetch_max_wait_ms or _default_fetch_max_wait_ms(),
            "tracer_linger_ms": args.tracer_linger_ms,
            "tracer_step_s": args.step_s,
            "load_linger_ms": args.load_linger_ms,
            "tracer_acked_p50_ms": 1000 * percentile(tracking.acked, 0.5),
            "tracer_acked_p99_ms": 1000 * percentile(tracking.acked, 0.99),
        })
        return figures
    finally:
        if load is not None:
            load.kill()
            load.wait()
        api.send_signal(signal.SIGINT)
        engine.send_signal(signal.SIGTERM)
        out, _ = engine.communicate(timeout=60)
        api.wait(timeout=60)
        lines = out.decode().strip().splitlines()
        if lines:
            figures["engine"] = json.loads(lines[-1])
            print(f"engine: {lines[-1]}", flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        if sys.argv[2] == "engine":
            from projector.runtime import run
            run(run_engine(sys.argv[3], sys.argv[4], sys.argv[5].split(","), int(sys.argv[6]),
                           int(sys.argv[7])))
        elif sys.argv[2] == "load":
            from projector.runtime import run
            run(run_load(sys.argv[3], sys.argv[4].split(","), int(sys.argv[5]), int(sys.argv[6]),
                         int(sys.argv[7])))
        else:
            run_api(sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller numbers: a smoke run")
    parser.add_argument("--load", type=int, default=2000, help="background events/s (default 2,000)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--per-connection", type=int, default=10)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--poll-timeout-ms", type=int, default=200)
    parser.add_argument("--tracer-linger-ms", type=int, default=5,
                        help="the tracer producer's linger.ms (default 5, Kafka's producer default "
                             "since 4.0; 0: a produce request per event)")
    parser.add_argument("--load-linger-ms", type=int, default=100,
                        help="the background producer's linger.ms (default 100; see the module doc)")
    parser.add_argument("--step-s", type=float, default=STEP_S,
                        help=f"seconds between two events of one tracer order (default {STEP_S:g})")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=0,
                        help="PROJECTOR_FETCH_MAX_WAIT_MS for the engine (0: the default, 30)")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.per_connection, args.idle, args.load = 10, 10, 500, 500
    from projector.runtime import run
    speed_before = host_speed_ms()
    with stack(durable=True) as s:
        figures = run(drive(args, s.admin_url, s.bootstrap))
    figures["host_speed_ms"] = [speed_before, host_speed_ms()]
    lost = figures["tracer_events_sent"] - figures["matched"]
    print()
    print(f"subscriptions  {figures['subscriptions']:,} over {figures['connections']} connections, "
          f"background {figures['load_events_per_s']:,} events/s")
    print(f"latency        p50 {figures['latency_p50_ms']:.1f} ms (target < 50), "
          f"p99 {figures['latency_p99_ms']:.1f} ms (target < 250), max {figures['latency_max_ms']:.1f} ms")
    print(f"frames         {figures['frames']:,} for {figures['tracer_events_sent']:,} tracer events "
          f"({lost:,} coalesced or missing, {figures['unmatched_frames']} unmatched)")
    print(f"projector lag  median {figures['projector_lag_median']:,.0f} events, "
          f"max {figures['projector_lag_max']:,} (sampled every second)")
    print(f"API share      notification -> frame written: p50 <= {figures['api_push_p50_ms']:g} ms, "
          f"p99 <= {figures['api_push_p99_ms']:g} ms; feed round p50 <= "
          f"{figures['feed_round_p50_ms']:g} ms, p99 <= {figures['feed_round_p99_ms']:g} ms "
          "(histogram buckets)")
    stages = figures.get("engine", {})
    if "tracer_committed_p50_ms" in stages:
        print(f"stages         p50 (p99) from send() (linger {figures['tracer_linger_ms']} ms): broker ack "
              f"{figures['tracer_acked_p50_ms']:.0f} ({figures['tracer_acked_p99_ms']:.0f}) ms, "
              f"fetched {stages['tracer_fetched_p50_ms']:.0f} ({stages['tracer_fetched_p99_ms']:.0f}) ms, "
              f"batch cut {stages['tracer_cut_p50_ms']:.0f} ({stages['tracer_cut_p99_ms']:.0f}) ms, "
              f"committed {stages['tracer_committed_p50_ms']:.0f} "
              f"({stages['tracer_committed_p99_ms']:.0f}) ms, frame {figures['latency_p50_ms']:.0f} "
              f"({figures['latency_p99_ms']:.0f}) ms")
    print(f"machine        {figures['machine_cpus']} CPUs; this run used "
          f"{figures['run_cpu_cores']:.2f} cores "
          "(PostgreSQL, broker, projector, API, driver), other processes "
          f"{figures['other_processes_cpu_cores']:.2f}; host speed (a fixed loop, idle, before / "
          f"after) {figures['host_speed_ms'][0]:.1f} / {figures['host_speed_ms'][1]:.1f} ms")
    print("               by process: " + ", ".join(
        f"{role} {c:.2f}" for role, c in sorted(figures["cpu_cores_by_process"].items(),
                                                key=lambda rc: -rc[1])))
    print(f"API            {figures['api_cpu_cores_during_tracers']:.2f} cores, "
          f"RSS {figures['api_rss_mb_busy']:.0f} MB")
    print(f"idle           {figures['idle_subscriptions']:,} subscriptions over "
          f"{figures['idle_connections']} connections (opened in {figures['idle_subscribe_s']:.1f} s): "
          f"API RSS {figures['api_rss_mb_with_idle']:.0f} MB (target < 1024)")
    path = write_results("subscriptions", figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
