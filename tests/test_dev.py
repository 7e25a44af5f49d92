"""`projector dev` as a newcomer runs it: it serves GraphiQL and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from projector.embedded import free_port


def _wait_for_graphql(url: str, proc: subprocess.Popen[bytes], timeout_s: float,
                      log_path: Path) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"projector dev exited early with {proc.returncode}:\n"
                                 f"{log_path.read_text()[-3000:]}")
        try:
            resp = httpx.get(url, headers={"Accept": "text/html"}, timeout=2)
            if resp.status_code == 200:
                return resp
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@pytest.mark.slow
def test_dev_serves_graphiql_and_sigint_stops_every_child(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env["API_PORT"] = str(port)
    env["PROJECTOR_METRICS_PORT"] = str(free_port())
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "projector.cli", "dev", "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        page = _wait_for_graphql(f"http://127.0.0.1:{port}/graphql", proc, 120, log_path)
        assert "graphiql" in page.text.lower()
        answer = httpx.post(f"http://127.0.0.1:{port}/graphql",
                            json={"query": "{ projections { name version } }"}, timeout=10)
        names = {p["name"] for p in answer.json()["data"]["projections"]}
        assert {"orders", "timeline"} <= names

        # The banner comes once the projector has its partitions too: what a newcomer
        # publishes after it shows up (the consumer group's join takes seconds).
        deadline = time.monotonic() + 60
        while "projector dev is running" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Projector     consuming them" in log_path.read_text(), log_path.read_text()[-3000:]

        children = psutil.Process(proc.pid).children(recursive=True)
        kinds = {c.name() for c in children}
        assert "postgres" in kinds, kinds
        assert any(k.startswith("tansu") for k in kinds), kinds

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"orphans after SIGINT: {[(p.pid, p.name()) for p in alive]}"
        output = log_path.read_text()
        assert "projector dev is running" in output
        assert "Traceback" not in output, output[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
