"""One frozen Settings object, built once from the environment and CLI flags.

Data only: the running services (``projector.dev``, ``projector.engine``,
``api.app``) take a Settings and never read the environment themselves.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from projector.errors import ConfigError
from projector.events import DEFAULT_TOPICS

T = TypeVar("T")

_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _parse_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"out of range {lo}..{hi}")
        return value

    return parse


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _parse_topics(raw: str) -> tuple[str, ...]:
    topics = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not topics:
        raise ValueError("empty list")
    bad = [t for t in topics if not _TOPIC_RE.match(t)]
    if bad:
        raise ValueError(f"invalid topic name(s): {', '.join(bad)}")
    return topics


def _parse_db_url(raw: str) -> str:
    if not raw.startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgresql://")
    return raw


def _parse_bootstrap(raw: str) -> str:
    hosts = [h.strip() for h in raw.split(",") if h.strip()]
    if not hosts or any(not re.match(r"^[^:\s]+:\d{1,5}$", h) for h in hosts):
        raise ValueError("expected host:port[,host:port...]")
    return ",".join(hosts)


def _parse_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError("not a log level")
    return level


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("not one of the choices")
        return value

    return parse


# name -> (environment variable, parser, what it expects)
_ENV: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "database_url": ("DATABASE_URL", _parse_db_url, "a postgresql:// URL"),
    "database_read_url": ("DATABASE_READ_URL", _parse_db_url, "a postgresql:// URL"),
    "kafka_bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", _parse_bootstrap, "host:port[,host:port...]"),
    "group_id": ("PROJECTOR_GROUP_ID", str.strip, "a consumer group id"),
    "topics": ("PROJECTOR_TOPICS", _parse_topics, "a comma-separated list of topic names"),
    "topic_partitions": ("PROJECTOR_TOPIC_PARTITIONS", _parse_int(1, 1000), "an integer 1..1000"),
    "api_host": ("API_HOST", str.strip, "a host name or IP address"),
    "api_port": ("API_PORT", _parse_int(0, 65535), "a port number 0..65535"),
    "log_level": ("LOG_LEVEL", _parse_level, "one of " + ", ".join(_LOG_LEVELS)),
    "log_format": ("LOG_FORMAT", _parse_choice("text", "json"), "text or json"),
    "batch_max_events": ("PROJECTOR_BATCH_MAX_EVENTS", _parse_int(1, 1_000_000), "an integer 1..1000000"),
    "poll_timeout_ms": ("PROJECTOR_POLL_TIMEOUT_MS", _parse_int(1, 60_000), "milliseconds 1..60000"),
    "fetch_max_wait_ms": ("PROJECTOR_FETCH_MAX_WAIT_MS", _parse_int(1, 60_000),
                          "milliseconds 1..60000"),
    "session_timeout_ms": (
        "PROJECTOR_SESSION_TIMEOUT_MS", _parse_int(1000, 600_000), "milliseconds 1000..600000"),
    "auto_rebuild": ("PROJECTOR_AUTO_REBUILD", _parse_bool, "true or false"),
    "api_auth": ("API_AUTH", _parse_choice("none", "jwt"), "none or jwt"),
    "metrics_host": ("PROJECTOR_METRICS_HOST", str.strip, "a listen address"),
    "metrics_port": ("PROJECTOR_METRICS_PORT", _parse_int(0, 65535), "a port 0..65535 (0: any free port)"),
    "ready_lag": ("PROJECTOR_READY_LAG", _parse_int(0, 10**12), "a number of events >= 0"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the server. Build it with :meth:`from_env`.

    ``database_url`` / ``kafka_bootstrap_servers`` left as None mean "start the
    embedded server" in ``projector dev`` and are an error elsewhere.
    """

    database_url: str | None = None
    database_read_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    group_id: str = "projector"
    topics: tuple[str, ...] = DEFAULT_TOPICS
    topic_partitions: int = 3
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    log_format: str = "text"
    batch_max_events: int = 7_500
    poll_timeout_ms: int = 200
    # How long the broker may hold a fetch that finds nothing new. Apache Kafka
    # answers a held fetch when data arrives; the embedded broker re-reads at
    # about half the wait, so this bounds the delay of a new event there:
    # 500 ms (aiokafka's default) cost ~200 ms, 100 ms ~12-20 ms, 30 ms ~7 ms.
    fetch_max_wait_ms: int = 30
    session_timeout_ms: int = 10_000
    auto_rebuild: bool = True
    api_auth: str = "none"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    ready_lag: int = 1000
    data_dir: str = ".projector"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Read every variable in ``_ENV`` from ``env`` (default ``os.environ``).

        ``overrides`` (from CLI flags) win over the environment; None values are
        ignored so that an absent flag does not erase a variable.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (var, parse, expected) in _ENV.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"{var}={raw!r} is not valid: expected {expected} ({exc})."
                ) from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def read_url(self) -> str | None:
        return self.database_read_url or self.database_url

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set: set it to a postgresql:// URL, "
                "or use `projector dev`, which starts an embedded PostgreSQL."
            )
        return self.database_url

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set: set it to host:port of your brokers, "
                "or use `projector dev`, which starts an embedded broker."
            )
        return self.kafka_bootstrap_servers

    @property
    def log_level_no(self) -> int:
        return int(logging.getLevelName(self.log_level))
