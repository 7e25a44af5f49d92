"""Embedded development servers: PostgreSQL and a Kafka-compatible broker.

Both run as supervised child processes of ``projector dev`` and of the test
fixtures; neither is needed when DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set.
"""

from __future__ import annotations

from projector.embedded.broker import EmbeddedBroker
from projector.embedded.postgres import EmbeddedPostgres
from projector.embedded.process import ChildProcess, free_port

__all__ = ["ChildProcess", "EmbeddedBroker", "EmbeddedPostgres", "free_port"]
