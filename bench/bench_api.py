"""GraphQL API throughput next to a bare Starlette+asyncpg endpoint running the same SQL.

    DATABASE_URL=postgresql://... python bench/bench_api.py [--fill N] [--duration 10]
        [--connections 32] [--profile]

Starts the API (``api.app.create_app``, one uvicorn worker, uvloop + httptools,
API_AUTH=none) and ``bench/bare_api.py`` as child processes, then drives each
with a load generator written on raw asyncio sockets (HTTP/1.1 keep-alive,
``--connections`` connections, no Accept-Encoding so no gzip), for three
queries:

- ``order_by_id``: ``order(orderId)`` with random ids
- ``orders_paid``: ``orders(first: 20, filter: {status: [PAID]})``
- ``customer_orders``: ``customer(customerId)`` with its first 20 orders nested

It prints req/s, p50 and p99 latency and the API/bare ratio for each, and
writes bench/results/api.json. The database must hold the read tables
(the engine bench fills them); ``--fill N`` inserts N synthetic orders (with
their customers, timeline rows and checkpoints) directly first. Without
DATABASE_URL an embedded PostgreSQL is started for the run (needs --fill).
``--profile`` runs the order-by-id load once more against an API under
pyinstrument (if installed) and writes bench/results/api_profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

ORDER_QUERY = """query($id: ID!) { order(orderId: $id) { orderId customerId status totalAmount currency
  placedAt paidAt itemCount items { sku qty unitPrice } } }"""
ORDERS_QUERY = """{ orders(first: 20, filter: {status: [PAID]}) {
  edges { cursor node { orderId customerId status totalAmount placedAt } } pageInfo { hasNextPage } } }"""
CUSTOMER_QUERY = """query($id: ID!) { customer(customerId: $id) { customerId orderCount totalSpent
  orders(first: 20) { edges { node { orderId status totalAmount placedAt } } } } }"""

STATUSES = ("PLACED", "INVENTORY_RESERVED", "PAID", "SHIPPING_SCHEDULED", "SHIPPED", "DELIVERED",
            "CANCELLED", "FAILED", "REFUNDED")
TOPICS = ("orders.placed", "inventory.reserved", "inventory.failed", "payments.succeeded",
          "payments.failed", "shipping.scheduled", "orders.shipped", "orders.delivered",
          "orders.cancelled", "payments.refunded")


# --- filling ----------------------------------------------------------------------------


async def fill(url: str, orders: int) -> None:
    """Insert ``orders`` synthetic orders (10 per customer) and everything derived from them."""
    from projector.db import migrate
    from projector.projections import ALL

    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, ALL)
        started = time.perf_counter()
        statuses = "ARRAY[" + ",".join(f"'{s}'" for s in STATUSES) + "]"
        for lo in range(0, orders, 100_000):
            hi = min(orders, lo + 100_000) - 1
            await conn.execute(f"""
                INSERT INTO order_summary (order_id, customer_id, status, items, item_count, total_amount,
                  currency, placed_at, paid_at, paid_amount, refunded_amount, last_event_at, event_count,
                  event_ids, merge_state, updated_seq)
                SELECT 'o-' || lpad(i::text, 9, '0'), 'c-' || lpad((i / 10)::text, 8, '0'),
                  ({statuses})[1 + (i * 7919) % 9],
                  jsonb_build_array(jsonb_build_object('sku', 'sku-' || (i % 500), 'qty', 1 + i % 3,
                    'unit_price', (10 + i % 90)::text)),
                  1 + i % 3, (10 + i % 90) * (1 + i % 3), 'EUR',
                  timestamptz '2024-01-01' + i * interval '31 seconds',
                  CASE WHEN (i * 7919) % 9 >= 2 THEN timestamptz '2024-01-01' + i * interval '31 seconds'
                    + interval '5 minutes' END,
                  CASE WHEN (i * 7919) % 9 >= 2 THEN (10 + i % 90) * (1 + i % 3) ELSE 0 END, 0,
                  timestamptz '2024-01-01' + i * interval '31 seconds', 1, ARRAY['e-' || i], '{{}}', i
                FROM generate_series($1::bigint, $2::bigint) AS i ON CONFLICT DO NOTHING""", lo, hi)
            await conn.execute("""
                INSERT INTO order_timeline (event_id, order_id, event_type, occurred_at, topic, "partition",
                  "offset", updated_seq)
                SELECT 'e-' || i, 'o-' || lpad(i::text, 9, '0'), 'OrderPlaced',
                  timestamptz '2024-01-01' + i * interval '31 seconds', 'orders.placed', i % 3, i / 3, i
                FROM generate_series($1::bigint, $2::bigint) AS i ON CONFLICT DO NOTHING""", lo, hi)
        await conn.execute("""
            INSERT INTO customer_summary (customer_id, order_count, paid_order_count, cancelled_order_count,
              total_spent, first_order_at, last_order_at, updated_seq)
            SELECT customer_id, count(*), count(paid_at), count(*) FILTER (WHERE status = 'CANCELLED'),
              sum(paid_amount), min(placed_at), max(placed_at), 0
            FROM order_summary GROUP BY customer_id ON CONFLICT (customer_id) DO NOTHING""")
        for projection in ("orders", "timeline"):
            for topic in TOPICS:
                for partition in range(3):
                    await conn.execute(
                        "INSERT INTO projector_checkpoints (projection, topic, partition, next_offset)"
                        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        projection, topic, partition, orders // 3)
        await conn.execute("ANALYZE")
        print(f"filled {orders} orders in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        await conn.close()


async def sample_ids(url: str) -> tuple[list[str], list[str], int]:
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT count(*) FROM order_summary")
        order_ids = [r[0] for r in await conn.fetch(
            "SELECT order_id FROM order_summary TABLESAMPLE SYSTEM (10) LIMIT 20000")]
        customer_ids = [r[0] for r in await conn.fetch(
            "SELECT customer_id FROM customer_summary TABLESAMPLE SYSTEM (10) LIMIT 20000")]
    finally:
        await conn.close()
    if not order_ids or not customer_ids:
        sys.exit("the database has no orders or customers: fill it (--fill N) or run the engine bench")
    return order_ids, customer_ids, int(total)


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(argv: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{argv[0]} exited with {proc.returncode} while starting")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{argv[0]} did not listen on {port} within 30 s") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_graphql(port: int, profile: Path | None) -> None:
    """Child process: the API under uvicorn, one worker (optionally under pyinstrument)."""
    import signal

    import uvicorn
    import uvloop

    from api.app import create_app
    from api.server import _Server
    from projector.settings import Settings

    app = create_app(Settings.from_env(api_auth="none"))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http="httptools",
                            access_log=False, log_level="warning", lifespan="on")
    server = _Server(config)  # leaves the signals to us: the profile is written after it stops

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, setattr, server, "should_exit", True)
        await server.serve()

    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    uvloop.run(run())
    if profiler is not None and profile is not None:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        if profiler.last_session is not None:
            profiler.last_session.save(str(profile.with_suffix(".pyisession")))


# --- load -------------------------------------------------------------------------------


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float | None = None
    server_cpu_us_per_request: float | None = None
    # The whole machine while measuring (others' processes included): the
    # figures above only mean something next to these.
    machine_busy_cores: float | None = None
    load_average_1m: float | None = None


def post(path: str, body: bytes) -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _connection(port: int, make: Callable[[], bytes], deadline: float, record_from: float,
                      latencies: list[float], errors: list[int], check_errors: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            request = make()
            started = time.perf_counter()
            if started >= deadline:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if started >= record_from:
                latencies.append(done - started)
                if head[9:12] != b"200" or (check_errors and b'"errors"' in body):
                    errors[0] += 1
    finally:
        writer.close()


async def load(port: int, make: Callable[[], bytes], connections: int, duration_s: float,
               warmup_s: float, check_errors: bool, pid: int | None = None) -> Result:
    now = time.perf_counter()
    record_from, deadline = now + warmup_s, now + warmup_s + duration_s
    latencies: list[float] = []
    errors = [0]
    import psutil  # type: ignore[import-untyped]

    proc = psutil.Process(pid) if pid is not None else None

    def busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    async def cpu_at_start() -> tuple[float, float]:
        await asyncio.sleep(warmup_s)
        t = proc.cpu_times() if proc is not None else None
        return (float(t.user + t.system) if t is not None else 0.0), busy()

    cpu_task = asyncio.ensure_future(cpu_at_start())
    await asyncio.gather(*(_connection(port, make, deadline, record_from, latencies, errors, check_errors)
                           for _ in range(connections)))
    cpu_before, busy_before = await cpu_task
    machine_busy = busy() - busy_before
    server_cpu = None
    if proc is not None:
        t = proc.cpu_times()
        server_cpu = float(t.user + t.system) - cpu_before
    seconds = time.perf_counter() - record_from
    latencies.sort()
    n = len(latencies)
    return Result(
        requests=n, errors=errors[0], seconds=round(seconds, 3), rps=round(n / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3) if n else 0.0,
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else 0.0,
        server_cpu_s=None if server_cpu is None else round(server_cpu, 3),
        server_cpu_us_per_request=None if server_cpu is None or not n else round(server_cpu / n * 1e6, 1),
        machine_busy_cores=round(machine_busy / seconds, 2), load_average_1m=round(os.getloadavg()[0], 2),
    )


def scenarios(order_ids: list[str], customer_ids: list[str]) -> dict[str, tuple[Callable[[], bytes],
                                                                              Callable[[], bytes]]]:
    rnd = random.Random(7)
    orders_body = orjson.dumps({"query": ORDERS_QUERY})
    return {
        "order_by_id": (
            lambda: post("/graphql", orjson.dumps({"query": ORDER_QUERY,
                                                   "variables": {"id": rnd.choice(order_ids)}})),
            lambda: post("/order", orjson.dumps({"id": rnd.choice(order_ids)}))),
        "orders_paid": (lambda: post("/graphql", orders_body), lambda: post("/orders", b"{}")),
        "customer_orders": (
            lambda: post("/graphql", orjson.dumps({"query": CUSTOMER_QUERY,
                                                   "variables": {"id": rnd.choice(customer_ids)}})),
            lambda: post("/customer", orjson.dumps({"id": rnd.choice(customer_ids)}))),
    }


# --- main -------------------------------------------------------------------------------


@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if not args.fill:
        sys.exit("set DATABASE_URL to a filled database, or pass --fill N (an embedded PostgreSQL is used)")
    from projector.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        os.chmod(tmp, 0o755)
        pg = EmbeddedPostgres(Path(tmp), durable=False, preferred_port=0)
        pg.start()
        try:
            yield pg.url
        finally:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fill", type=int, default=0, help="insert N synthetic orders first")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", choices=["order_by_id", "orders_paid", "customer_orders"], action="append")
    parser.add_argument("--profile", action="store_true", help="also profile the API (pyinstrument)")
    parser.add_argument("--serve-graphql", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_graphql:
        serve_graphql(args.serve_graphql, args.profile_to)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    with database(args) as url:
        if args.fill:
            asyncio.run(fill(url, args.fill))
        order_ids, customer_ids, total = asyncio.run(sample_ids(url))
        env = {**os.environ, "DATABASE_URL": url, "API_AUTH": "none", "PYTHONPATH": str(ROOT)}
        gql_port, bare_port = free_port(), free_port()
        results: dict[str, Any] = {}
        chosen = scenarios(order_ids, customer_ids)
        bare_argv = [str(ROOT / "bench" / "bare_api.py"), "--port", str(bare_port)]
        with server([__file__, "--serve-graphql", str(gql_port)], gql_port, env) as gql, \
                server(bare_argv, bare_port, env) as bare:
            for name, (gql_request, bare_request) in chosen.items():
                if args.only and name not in args.only:
                    continue
                g = asyncio.run(load(gql_port, gql_request, args.connections, args.duration, args.warmup,
                                     True, gql.pid))
                b = asyncio.run(load(bare_port, bare_request, args.connections, args.duration, args.warmup,
                                     False, bare.pid))
                ratio = round(g.rps / b.rps, 3) if b.rps else None
                results[name] = {"graphql": asdict(g), "bare": asdict(b), "ratio": ratio}
                print(f"{name:16} graphql {g.rps:8.0f} req/s p50 {g.p50_ms:6.2f} ms p99 {g.p99_ms:6.2f} ms"
                      f" ({g.errors} errors) | bare {b.rps:8.0f} req/s p50 {b.p50_ms:6.2f} ms"
                      f" p99 {b.p99_ms:6.2f} ms | ratio {ratio}", flush=True)
                print(f"{'':16} server CPU/request: graphql {g.server_cpu_us_per_request} us, bare "
                      f"{b.server_cpu_us_per_request} us; machine busy {g.machine_busy_cores} / "
                      f"{b.machine_busy_cores} of {os.cpu_count()} cores, load average {g.load_average_1m} / "
                      f"{b.load_average_1m}", flush=True)
        if args.profile:
            profile = RESULTS / "api_profile.txt"
            port = free_port()
            with server([__file__, "--serve-graphql", str(port), "--profile-to", str(profile)], port, env):
                asyncio.run(load(port, chosen["order_by_id"][0], args.connections, args.duration,
                                 args.warmup, True))
            print(f"profile: {profile}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "api.json"
    out.write_text(orjson.dumps({
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "orders": total, "connections": args.connections, "duration_s": args.duration,
        "server": "uvicorn, 1 worker, uvloop, httptools, API_AUTH=none, no gzip (no Accept-Encoding)",
        "results": results,
    }, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
