"""The embedded stack works end to end: a Kafka message becomes a PostgreSQL row."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def test_message_from_broker_lands_in_postgres(
    kafka_bootstrap: str, topics: tuple[str, ...], pg_dsn: str
) -> None:
    topic = topics[0]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b'{"hello": "world"}', key=b"order-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000)
        record = batch[tp][0]
    finally:
        await consumer.stop()

    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE landed (key text, value jsonb, off bigint)")
        await conn.execute("INSERT INTO landed VALUES ($1, $2, $3)",
                           record.key.decode(), record.value.decode(), record.offset)
        row = await conn.fetchrow("SELECT key, value->>'hello' AS hello, off FROM landed")
    finally:
        await conn.close()
    assert (row["key"], row["hello"], row["off"]) == ("order-1", "world", meta.offset)
