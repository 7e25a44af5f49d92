"""Creating the order topics: idempotent, on any Kafka-compatible broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from projector.errors import TransientError

log = logging.getLogger("projector.topics")

_TOPIC_EXISTS = 36


async def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 3,
                        replication: int = 1, timeout_s: float = 30.0) -> list[str]:
    """Create the missing ``topics``; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError) as exc:
        raise TransientError(
            f"cannot reach the Kafka brokers at {bootstrap}: {exc}. Check "
            "KAFKA_BOOTSTRAP_SERVERS, or unset it to use the embedded broker in `projector dev`."
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(t, partitions, replication) for t in missing])
            for name, code, message in resp.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise KafkaError(f"creating topic {name} failed: {code} {message}")
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
