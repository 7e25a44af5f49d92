"""Session-scoped real servers for the tests: PostgreSQL and a Kafka-compatible broker.

Nothing needs to run beforehand: the fixtures start the embedded servers
themselves. When DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set, those servers
are used instead. Every test gets a fresh database and fresh topic names.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from projector.embedded import EmbeddedBroker, EmbeddedPostgres
from projector.events import DEFAULT_TOPICS

_counter = itertools.count()


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: that is mode 0700, which the unprivileged
    # PostgreSQL user cannot traverse when the tests run as root.
    path = Path(tempfile.mkdtemp(prefix="projector-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg(servers_dir: Path) -> Iterator[EmbeddedPostgres | None]:
    """The embedded server (None when DATABASE_URL points elsewhere)."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    pg = EmbeddedPostgres(servers_dir / "pg", durable=False, preferred_port=0)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def pg_admin_url(embedded_pg: EmbeddedPostgres | None) -> str:
    return os.environ.get("DATABASE_URL") or (embedded_pg.url if embedded_pg else "")


@pytest.fixture(scope="session")
def embedded_broker(servers_dir: Path) -> Iterator[EmbeddedBroker | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = EmbeddedBroker(servers_dir / "broker", preferred_port=0)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(embedded_broker: EmbeddedBroker | None) -> str:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    assert embedded_broker is not None
    return embedded_broker.bootstrap_servers


def _url_with_db(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
async def pg_dsn(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty database per test; dropped afterwards."""
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _url_with_db(pg_admin_url, name)
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def topics(kafka_bootstrap: str) -> tuple[str, ...]:
    """The ten order topics under a fresh prefix, created with 3 partitions each."""
    prefix = f"t{next(_counter)}-{uuid.uuid4().hex[:6]}."
    names = tuple(prefix + t for t in DEFAULT_TOPICS)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 3, 1) for n in names])
    finally:
        await admin.close()
    return names
