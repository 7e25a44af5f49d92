"""Publishing simulated records to Kafka. The only I/O of the simulator."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from projector.errors import TransientError
from projector.events import DEFAULT_TOPICS
from projector.simulator.generator import Kind, Record, generate
from projector.simulator.options import SimulationOptions, topic_map_for

# A paced publisher sleeps only once it is this far ahead of its schedule: a timer per
# record cost more CPU than the sends (2,000 records/s), and the producer's linger
# batches the records anyway.
_PACE_S = 0.005


@dataclass(frozen=True, slots=True)
class PublishStats:
    """Progress of a publish: counts so far and elapsed seconds."""

    sent: int  # records acknowledged by the broker
    events: int  # of which valid first deliveries
    duplicates: int
    invalid: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Acknowledged records per second."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


Progress = Callable[[PublishStats], None]


async def publish(
    records: Iterable[Record],
    bootstrap_servers: str,
    *,
    rate: float | None = None,
    progress: Progress | None = None,
    progress_interval_s: float = 0.25,
    linger_ms: int = 20,
    max_batch_bytes: int = 256 * 1024,
    max_in_flight: int = 5000,
    client_id: str = "projector-simulator",
    idempotent: bool = False,
) -> PublishStats:
    """Send ``records`` in order and wait until the broker acknowledged all of them.

    ``rate`` caps the send rate in records per second (None: as fast as the
    broker takes them). ``progress`` is called about every
    ``progress_interval_s`` seconds and once at the end. At most
    ``max_in_flight`` sends wait for acknowledgement at a time; ``linger_ms``
    and ``max_batch_bytes`` set the producer's batching. Records with the same
    key go to the same partition, in order (acks=all; ``idempotent`` also
    rules out duplicates from producer retries, where the broker supports it).

    Raises :class:`TransientError` when the broker cannot be reached or a send fails.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 records/s, or None")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=linger_ms,
        max_batch_size=max_batch_bytes,
    )
    try:
        await producer.start()
    except KafkaConnectionError as exc:
        await producer.stop()
        raise TransientError(
            f"cannot reach the Kafka brokers at {bootstrap_servers}: {exc}. "
            "Check KAFKA_BOOTSTRAP_SERVERS (or --kafka-bootstrap-servers)."
        ) from exc

    counts = {Kind.EVENT: 0, Kind.DUPLICATE: 0, Kind.INVALID: 0}
    in_flight: deque[tuple[asyncio.Future[object], Kind]] = deque()
    started = time.monotonic()
    last_report = started
    submitted = 0

    def stats() -> PublishStats:
        return PublishStats(
            sent=sum(counts.values()),
            events=counts[Kind.EVENT],
            duplicates=counts[Kind.DUPLICATE],
            invalid=counts[Kind.INVALID],
            elapsed_s=time.monotonic() - started,
        )

    async def settle_oldest() -> None:
        future, kind = in_flight.popleft()
        await future
        counts[kind] += 1

    try:
        for record in records:
            if rate is not None:
                # Pace against the start time, not the last send: no drift.
                ahead = started + submitted / rate - time.monotonic()
                if ahead > _PACE_S:
                    await asyncio.sleep(ahead)
            future = await producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
            in_flight.append((future, record.kind))
            submitted += 1
            while len(in_flight) > max_in_flight or (in_flight and in_flight[0][0].done()):
                await settle_oldest()
            if progress is not None and time.monotonic() - last_report >= progress_interval_s:
                last_report = time.monotonic()
                progress(stats())
        await producer.flush()
        while in_flight:
            await settle_oldest()
    except KafkaError as exc:
        raise TransientError(f"publishing to {bootstrap_servers} failed: {exc}") from exc
    finally:
        # Abandon what is still unsent on error; stop() flushes nothing more then.
        await producer.stop()
    final = stats()
    if progress is not None:
        progress(final)
    return final


async def publish_demo(
    bootstrap_servers: str,
    *,
    orders: int = 1000,
    topics: Sequence[str] = DEFAULT_TOPICS,
    seed: int = 1,
    rate: float | None = None,
) -> PublishStats:
    """Publish a realistic, valid-only stream of ``orders`` orders to ``topics``.

    ``topics`` is a topic list as in ``Settings.topics`` (see
    :func:`~projector.simulator.options.topic_map_for`).
    """
    options = SimulationOptions(orders=orders, seed=seed, topic_map=topic_map_for(topics))
    return await publish(generate(options), bootstrap_servers, rate=rate)
