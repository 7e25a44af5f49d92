"""The end of a batch's transaction against a real PostgreSQL: the checkpoints' compare-and-set,
the change notification and COMMIT in one round trip (``checkpoints.advance_and_commit``)."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from projector import checkpoints
from projector.db import migrate
from projector.errors import FencedError
from projector.projections import ALL

# Names no Kafka topic or projection of ours has, to prove the quoting of the literals.
PROJECTION = "o'brien\\x"
TOPIC = "it's\\here"


async def test_a_batch_ends_with_its_checkpoints_its_notification_and_commit(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    listener = await asyncpg.connect(pg_dsn)
    try:
        await migrate(conn, ALL)
        assert await checkpoints.load(conn, PROJECTION, [(TOPIC, 0), (TOPIC, 1)]) == {
            (TOPIC, 0): checkpoints.FROM_LOG_START, (TOPIC, 1): checkpoints.FROM_LOG_START}
        heard: asyncio.Queue[str] = asyncio.Queue()
        await listener.add_listener("batch's changes", lambda *args: heard.put_nowait(args[3]))

        await conn.execute("BEGIN")
        seq = await conn.fetchval("SELECT nextval('projector_updated_seq')")  # a row written
        await checkpoints.advance_and_commit(conn, PROJECTION, {(TOPIC, 0): (-1, 7), (TOPIC, 1): (-1, 3)},
                                             ("batch's changes", ["order_summary", "daily_sales"]))
        assert not conn.is_in_transaction()
        assert orjson.loads(await asyncio.wait_for(heard.get(), 10)) == {
            "tables": ["daily_sales", "order_summary"], "seq": seq}
        assert await checkpoints.load(conn, PROJECTION, [(TOPIC, 0), (TOPIC, 1)]) == {
            (TOPIC, 0): 7, (TOPIC, 1): 3}

        # Another instance moved partition 0 meanwhile: nothing of this transaction commits.
        await conn.execute("BEGIN")
        await conn.execute("UPDATE projector_checkpoints SET next_offset = 9 WHERE partition = 0")
        with pytest.raises(FencedError, match="1 of 2 checkpoints moved under us"):
            await checkpoints.advance_and_commit(conn, PROJECTION, {(TOPIC, 0): (7, 8), (TOPIC, 1): (3, 4)})
        assert conn.is_in_transaction()  # aborted, for the caller to roll back
        await conn.execute("ROLLBACK")
        assert await checkpoints.load(conn, PROJECTION, [(TOPIC, 0), (TOPIC, 1)]) == {
            (TOPIC, 0): 7, (TOPIC, 1): 3}
        assert heard.empty()
    finally:
        await listener.close()
        await conn.close()
