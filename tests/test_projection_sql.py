"""The orders and timeline projections against a real PostgreSQL.

Every test gets a fresh database (``pg_dsn``), creates the tables from
``ddl()``, applies batches the way the engine does (one transaction each) and
compares the tables with the pure fold of the same events (``readmodels``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from readmodels import (
    LOGICAL,
    assert_tables_match,
    expected_order,
    expected_totals,
    fold_everything,
    stored_orders,
    stored_rows,
    stored_totals,
)

from projector.db import create_pool, migrate
from projector.engine import BATCH_BEGIN
from projector.events import EVENT_TYPES, TOPIC_OF, Event
from projector.projection import Positioned, Projection
from projector.projections import (
    ALL,
    customer_summary,
    daily_sales,
    order_store,
    order_summary,
    order_timeline,
    orders,
    product_sales,
)
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection
from projector.projections.row_cache import RowCache

D = Decimal
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MONEY = [None, D("0.1"), D("0.2"), D("1.50"), D("9.99"), D("100")]


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    await connection.execute("CREATE SEQUENCE IF NOT EXISTS projector_updated_seq")
    try:
        yield connection
    finally:
        await connection.close()


async def create_tables(conn: asyncpg.Connection, physical: Mapping[str, str] = LOGICAL) -> None:
    for projection in ALL:
        for statement in projection.ddl(physical):
            await conn.execute(statement)


# --- events ---------------------------------------------------------------------------


def placed(
    event_id: str, order_id: str, at: datetime, customer: str, sku: str, qty: int,
    unit_price: Decimal | None, total: Decimal,
) -> Event:
    items = ({"sku": sku, "qty": qty, "unit_price": unit_price},)
    payload = {"customer_id": customer, "items": items, "total_amount": total, "currency": "EUR"}
    return Event(event_id, "OrderPlaced", order_id, at, payload)


def random_payload(rng: random.Random, event_type: str) -> dict[str, Any]:
    if event_type == "OrderPlaced":
        items = tuple(
            {"sku": f"sku-{rng.randrange(8)}", "qty": rng.randint(1, 4), "unit_price": rng.choice(MONEY)}
            for _ in range(rng.randint(1, 3))
        )
        return {
            "customer_id": f"c-{rng.randrange(15)}",
            "items": items,
            "total_amount": rng.choice(MONEY[1:]),
            "currency": "EUR",
        }
    if event_type in ("PaymentSucceeded", "PaymentRefunded"):
        return {"amount": rng.choice(MONEY)}
    if event_type in ("OrderCancelled", "PaymentFailed", "InventoryReservationFailed"):
        return {"reason": rng.choice([None, "no stock", "card declined"])}
    if event_type == "ShippingScheduled":
        return {"carrier": rng.choice([None, "DHL"]), "eta": None}
    if event_type == "OrderShipped":
        return {"carrier": rng.choice(["UPS", "DHL"]), "tracking_number": f"T{rng.randrange(99)}"}
    return {}


def random_events(rng: random.Random, n_orders: int) -> list[Event]:
    """Distinct events of ``n_orders`` orders over three days; some orders have two OrderPlaced."""
    events: list[Event] = []
    for i in range(n_orders):
        order_id = f"o-{i:04d}"
        types = ["OrderPlaced", *rng.choices(EVENT_TYPES, k=rng.randint(0, 8))]
        if rng.random() < 0.2:
            types.remove("OrderPlaced")  # never placed, as far as we know
        for n, event_type in enumerate(types):
            events.append(
                Event(
                    event_id=f"{order_id}-{n}",
                    event_type=event_type,
                    order_id=order_id,
                    occurred_at=T0 + timedelta(minutes=rng.randrange(3 * 24 * 60)),
                    payload={"order_id": order_id, **random_payload(rng, event_type)},
                )
            )
    return events


def deliver(rng: random.Random, events: Sequence[Event], duplicates: int) -> list[Positioned]:
    """A shuffled delivery with ``duplicates`` extra copies, at increasing offsets per partition."""
    stream = list(events) + rng.choices(events, k=duplicates)
    rng.shuffle(stream)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for event in stream:
        tp = (TOPIC_OF[event.event_type], sum(map(ord, event.order_id)) % 3)
        offsets[tp] = offsets.get(tp, -1) + 1
        out.append(Positioned(event, tp[0], tp[1], offsets[tp]))
    return out


def split(rng: random.Random, stream: Sequence[Positioned], batches: int) -> list[list[Positioned]]:
    cuts = sorted(rng.sample(range(1, len(stream)), batches - 1)) if batches > 1 else []
    return [list(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


async def apply(
    conn: asyncpg.Connection,
    batch: Sequence[Positioned],
    physical: Mapping[str, str] = LOGICAL,
    projections: Sequence[Projection] | None = None,
) -> set[str]:
    """One engine-like transaction; by default with fresh projections (an empty row cache)."""
    changed: set[str] = set()
    async with conn.transaction():
        for projection in projections or (OrdersProjection(), TimelineProjection()):
            changed |= await projection.apply(conn, batch, physical)
    return changed


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "cache_rows"),
    [(1, 50_000), (2, 50_000), (3, 0), (4, 7)],
    ids=["cached-1", "cached-2", "uncached", "mostly-evicted"],
)
async def test_random_batches_match_the_fold(conn: asyncpg.Connection, seed: int, cache_rows: int) -> None:
    rng = random.Random(seed)
    await create_tables(conn)
    projections = (OrdersProjection(cache_rows), TimelineProjection())
    events = random_events(rng, 150)
    stream = deliver(rng, events, duplicates=len(events) // 3)
    for batch in split(rng, stream, batches=rng.randint(2, 12)):
        await apply(conn, batch, projections=projections)
    await assert_tables_match(conn, events)

    # The same events again, in another order and other batches: nothing changes.
    seq = await conn.fetchval("SELECT last_value FROM projector_updated_seq")
    for batch in split(rng, deliver(rng, events, duplicates=10), batches=3):
        assert await apply(conn, batch, projections=projections) == set()
    await assert_tables_match(conn, events)
    changed = await conn.fetchval(
        "SELECT count(*) FROM order_summary WHERE updated_seq > $1", seq
    )
    assert changed == 0


class _Failed(Exception):
    pass


@pytest.mark.parametrize(
    ("cache_rows", "failing"),
    [(50_000, None), (7, None), (50_000, "retried"), (50_000, "dropped"), (0, "dropped")],
)
async def test_batches_prepared_ahead_match_the_fold(
    conn: asyncpg.Connection, cache_rows: int, failing: str | None
) -> None:
    """As the engine runs them: each batch prepared while the one before is applied and
    not yet committed. One batch fails after the next was prepared: ``retried``, it is
    applied again (the next keeps its preparation); ``dropped``, both are delivered
    again as new batches (the engine re-seeks)."""
    rng = random.Random(cache_rows + len(failing or ""))
    await create_tables(conn)
    projections = (OrdersProjection(cache_rows), TimelineProjection())
    events = random_events(rng, 150)
    batches = split(rng, deliver(rng, events, duplicates=len(events) // 3), batches=8)
    for p in projections:
        await p.prepare(batches[0], LOGICAL)
    k = 0
    fail_at = 3 if failing else -1
    while k < len(batches):
        try:
            async with conn.transaction():
                for p in projections:
                    await p.apply(conn, batches[k], LOGICAL)
                if k + 1 < len(batches):
                    for p in projections:
                        await p.prepare(batches[k + 1], LOGICAL)
                if k == fail_at:
                    raise _Failed
        except _Failed:
            fail_at = -1
            if failing == "dropped":
                batches[k:k + 2] = [list(batches[k]), list(batches[k + 1])]  # fetched again
                for p in projections:
                    await p.prepare(batches[k], LOGICAL)
            continue  # "retried": the same batch, now without its preparation
        k += 1
    await assert_tables_match(conn, events)


async def test_shadow_tables_under_other_names(conn: asyncpg.Connection) -> None:
    physical = {t: f"{t}__rebuild_{'x' * 40}" for t in LOGICAL}  # long: hashed index names
    await create_tables(conn, physical)
    await create_tables(conn, physical)  # idempotent
    indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    # The 5 keys, then 10 secondary: orders 5, customers 1, products 2, timeline 1, days 1.
    assert len(indexes) == 5 + 5 + 1 + 2 + 1 + 1
    rng = random.Random(7)
    events = random_events(rng, 40)
    for batch in split(rng, deliver(rng, events, duplicates=20), batches=4):
        await apply(conn, batch, physical)
    await assert_tables_match(conn, events, physical)


async def test_the_order_write_finds_stored_rows_through_the_key(conn: asyncpg.Connection) -> None:
    # A cached (generic) plan must not scan the table: the statement runs for every batch, and
    # a seq scan plan chosen while the table was small cost 12 ms per batch at 16,000 orders.
    await create_tables(conn)
    rng = random.Random(11)
    events = [e for e in random_events(rng, 2_000) if e.event_type == "OrderPlaced"]
    for batch in split(rng, deliver(rng, events, duplicates=0), batches=4):
        await apply(conn, batch)
    await conn.execute("ANALYZE order_summary")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute("PREPARE write_orders AS " + order_store._write_sql("order_summary"))
    plan = "\n".join(r[0] for r in await conn.fetch(
        "EXPLAIN EXECUTE write_orders('[]', '{}', '{}')"))
    assert "Seq Scan on order_summary" not in plan, plan
    assert "order_summary_pkey" in plan, plan


async def test_a_batch_keeps_generic_plans_that_find_rows_by_key(conn: asyncpg.Connection) -> None:
    # A batch's transaction lets PostgreSQL keep generic plans (BATCH_BEGIN): made while the
    # tables are empty, as here, none may scan a table, which would cost more with every row.
    await migrate(conn, ALL)
    statements = {
        "load": order_store._load_sql("order_summary", False),
        "locked load": order_store._load_sql("order_summary", True),
        "order write": order_store._write_sql("order_summary"),
        "aggregates": orders._aggregates_sql("customer_summary", "product_sales", "daily_sales"),
        "customer recompute": customer_summary._recompute_sql("customer_summary", "order_summary"),
        "empty products": product_sales.delete_empty_sql("product_sales"),
        "empty days": daily_sales.delete_empty_sql("daily_sales"),
        "timeline": order_timeline._insert_sql("order_timeline"),
        "timeline probe": order_timeline._insert_sql("order_timeline", probe=True),
    }

    async def generic_plan(name: str) -> str:
        sql = statements[name]
        params = len((await conn.prepare(sql)).get_parameters())
        await conn.execute(f'PREPARE "{name}" AS {sql}')
        nulls = ", ".join(["NULL"] * params)
        plan = await conn.fetch(f'EXPLAIN EXECUTE "{name}"({nulls})')
        await conn.execute(f'DEALLOCATE "{name}"')
        return "\n".join(r[0] for r in plan)

    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        assert "Seq Scan on order_summary" in await generic_plan("load"), "the hazard guarded"
    await conn.execute(BATCH_BEGIN)
    try:
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")  # to see it
        for name in statements:
            plan = await generic_plan(name)
            assert "Seq Scan" not in plan, f"{name}:\n{plan}"
    finally:
        await conn.execute("ROLLBACK")
    assert await conn.fetchval("SHOW enable_seqscan") == "on"  # only the batch's transaction


async def test_the_projector_plans_each_statement_with_its_arguments(pg_dsn: str) -> None:
    # A generic plan cached while the tables were empty would scan them forever after.
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        for _ in range(2):
            async with pool.acquire() as connection:
                assert await connection.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
                # Rows and checkpoints commit together: a crash loses both, and they are
                # projected again from the log, so no batch waits for the WAL flush.
                assert await connection.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await pool.close()


async def test_settings_in_the_database_url_win_over_the_projectors(pg_dsn: str) -> None:
    pool = await create_pool(f"{pg_dsn}?application_name=billing-projector&synchronous_commit=on",
                             min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            assert await connection.fetchval("SHOW application_name") == "billing-projector"
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await pool.close()


async def test_a_released_connection_costs_no_reset_and_keeps_no_transaction(pg_dsn: str) -> None:
    # Releasing sends no reset statement (asyncpg's default is a round trip per transaction,
    # on each batch's path), and a transaction left open is still rolled back.
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    sent: list[str] = []
    try:
        async with pool.acquire() as connection:
            await connection.execute("CREATE TABLE IF NOT EXISTS released_probe (n int)")
            connection.add_query_logger(lambda record: sent.append(record.query))
            async with connection.transaction():
                await connection.execute("INSERT INTO released_probe VALUES (1)")
        assert not any("RESET" in q or "UNLISTEN" in q for q in sent), sent
        with pytest.raises(RuntimeError):
            async with pool.acquire() as connection:
                await connection.transaction().start()
                await connection.execute("INSERT INTO released_probe VALUES (2)")
                raise RuntimeError("the caller fails with its transaction open")
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT array_agg(n) FROM released_probe") == [1]
            await connection.execute("DROP TABLE released_probe")
    finally:
        await pool.close()


async def test_money_is_exact(conn: asyncpg.Connection) -> None:
    await create_tables(conn)
    events = [
        placed("a1", "a", T0, "c", "s", 1, D("0.1"), D("0.1")),
        Event("a2", "PaymentSucceeded", "a", T0, {"amount": None}),
        placed("b1", "b", T0, "c", "s", 1, D("0.2"), D("0.2")),
        Event("b2", "PaymentSucceeded", "b", T0, {"amount": D("0.2")}),
    ]
    for event in events:  # one batch each: the sums happen in SQL
        await apply(conn, [Positioned(event, "t", 0, 0)])
    assert await conn.fetchval("SELECT total_spent::text FROM customer_summary") == "0.3"
    assert await conn.fetchval("SELECT revenue::text FROM product_sales") == "0.3"
    assert await conn.fetchval("SELECT revenue::text FROM daily_sales") == "0.3"
    await assert_tables_match(conn, events)


async def test_an_earlier_order_placed_moves_the_aggregates(conn: asyncpg.Connection) -> None:
    await create_tables(conn)
    late = placed("e-late", "o", T0 + timedelta(days=1), "c-late", "old", 1, D("1"), D("1"))
    early = placed("e-early", "o", T0, "c-early", "new", 2, D("3"), D("6"))
    other = placed("p-1", "p", T0 + timedelta(days=2), "c-early", "new", 1, D("3"), D("3"))
    paid = Event("e-paid", "PaymentSucceeded", "o", T0 + timedelta(days=1, hours=1), {"amount": None})
    for event in (other, late, paid, early):
        await apply(conn, [Positioned(event, "t", 0, 0)])
    customers, products, days = await stored_totals(conn)
    assert set(customers) == {"c-early"}  # c-late has no order left: its row is gone
    assert customers["c-early"][0] == 2
    assert customers["c-early"][4:] == (T0, T0 + timedelta(days=2))
    assert set(products) == {"new"}
    assert set(days) == {T0.date(), (T0 + timedelta(days=2)).date()}
    await assert_tables_match(conn, [other, late, paid, early])


async def test_apply_returns_the_tables_it_changed(conn: asyncpg.Connection) -> None:
    await create_tables(conn)
    first = placed("x1", "x", T0, "c", "s", 1, None, D("5"))
    reserved = Event("x2", "InventoryReserved", "x", T0, {})
    orders, timeline = OrdersProjection(), TimelineProjection()
    async with conn.transaction():
        assert await orders.apply(conn, [Positioned(first, "t", 0, 0)], LOGICAL) == {
            "order_summary", "customer_summary", "product_sales", "daily_sales"}
        assert await orders.apply(conn, [Positioned(reserved, "t", 0, 1)], LOGICAL) == {"order_summary"}
        assert await orders.apply(conn, [Positioned(reserved, "t", 0, 1)], LOGICAL) == set()
        assert await timeline.apply(conn, [Positioned(reserved, "t", 0, 1)], LOGICAL) == {"order_timeline"}
        assert await timeline.apply(conn, [Positioned(reserved, "u", 1, 9)] * 2, LOGICAL) == set()
        assert await orders.apply(conn, [], LOGICAL) == set()
    row = await conn.fetchrow('SELECT topic, "partition", "offset" FROM order_timeline')
    assert tuple(row.values()) == ("t", 0, 1)  # the first position applied stays


class Recording:
    """A real connection that notes the statements sent through ``execute``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.sent = conn, []

    async def execute(self, sql: str, *args: Any) -> str:
        self.sent.append(sql)
        return await self.conn.execute(sql, *args)


async def test_the_timeline_probes_recent_duplicates_and_lets_the_key_catch_older_ones(
    conn: asyncpg.Connection,
) -> None:
    await create_tables(conn)
    timeline = TimelineProjection()
    events = [Event(f"e{n}", "InventoryReserved", f"o{n}", T0 + timedelta(seconds=n), {}) for n in range(6)]
    plain, fallback = order_timeline._insert_sql("order_timeline", probe=True), order_timeline._insert_sql(
        "order_timeline")

    async def run(batch: list[tuple[int, int]]) -> tuple[set[str], list[str]]:
        recording = Recording(conn)
        await conn.execute(BATCH_BEGIN)  # as the engine begins a batch
        changed = await timeline.apply(recording, [Positioned(events[n], "t", 0, o) for n, o in batch],
                                       LOGICAL)
        await conn.execute("COMMIT")
        return changed, [s for s in recording.sent if s.startswith("INSERT")]

    assert await run([(0, 0), (1, 1)]) == ({"order_timeline"}, [plain])
    # A duplicate of the last batch's event: probed, skipped, in the one statement.
    assert await run([(1, 7), (2, 2)]) == ({"order_timeline"}, [plain])
    assert await run([(1, 8)]) == (set(), [plain])
    await run([(3, 3)])
    await run([(4, 4)])
    # e0 is older than the last two batches: the key refuses the plain insert, which
    # runs again with ON CONFLICT, in the same transaction.
    assert await run([(0, 9), (5, 5)]) == ({"order_timeline"}, [plain, fallback])
    assert await run([(0, 10)]) == (set(), [plain])  # recent again: probed
    rows = await conn.fetch('SELECT event_id, "offset" FROM order_timeline ORDER BY event_id')
    assert [(r["event_id"], r["offset"]) for r in rows] == [(f"e{n}", n) for n in range(6)]


async def test_concurrent_instances_creating_the_same_order(pg_dsn: str, conn: asyncpg.Connection) -> None:
    """Two transactions both see no row for a new order; neither may lose the other's events."""
    await create_tables(conn)
    events = [
        placed("n1", "new", T0, "c", "s", 1, D("2"), D("2")),
        Event("n2", "PaymentSucceeded", "new", T0 + timedelta(minutes=1), {"amount": None}),
        Event("n3", "PaymentRefunded", "new", T0 + timedelta(minutes=2), {"amount": D("0.5")}),
    ]
    other = await asyncpg.connect(pg_dsn)
    try:
        first = conn.transaction()
        await first.start()
        await OrdersProjection().apply(conn, [Positioned(events[0], "t", 0, 0)], LOGICAL)

        async def second() -> set[str]:
            async with other.transaction():
                return await OrdersProjection().apply(
                    other, [Positioned(e, "t", 1, i) for i, e in enumerate(events[1:])], LOGICAL
                )

        task = asyncio.create_task(second())
        await asyncio.sleep(0.5)  # it loads nothing, then waits on our uncommitted insert
        assert not task.done()
        await first.commit()
        assert "order_summary" in await asyncio.wait_for(task, 10)
    finally:
        await other.close()
    expected = fold_everything(events)
    stored = await stored_orders(conn)
    assert stored == {"new": expected_order(expected["new"])}
    assert await stored_totals(conn) == expected_totals(expected)


async def test_concurrent_instances_updating_the_same_order(pg_dsn: str, conn: asyncpg.Connection) -> None:
    """Both instances hold the order in their row cache; the second writes while the
    first's update is uncommitted. Its compare-and-set must fail, not double-count."""
    await create_tables(conn)
    first_event = placed("u1", "upd", T0, "c", "s", 2, D("3"), D("6"))
    paid = Event("u2", "PaymentSucceeded", "upd", T0 + timedelta(minutes=1), {"amount": None})
    refund = Event("u3", "PaymentRefunded", "upd", T0 + timedelta(minutes=2), {"amount": None})
    mine, theirs = OrdersProjection(), OrdersProjection()
    await apply(conn, [Positioned(first_event, "t", 0, 0)], projections=[mine])
    other = await asyncpg.connect(pg_dsn)
    try:
        await apply(other, [Positioned(first_event, "t", 0, 0)], projections=[theirs])  # cached there too
        first = conn.transaction()
        await first.start()
        await mine.apply(conn, [Positioned(paid, "t", 0, 1)], LOGICAL)

        async def second() -> set[str]:
            async with other.transaction():
                return await theirs.apply(other, [Positioned(refund, "t", 1, 0)], LOGICAL)

        task = asyncio.create_task(second())
        await asyncio.sleep(0.5)  # its write waits on our uncommitted update
        assert not task.done()
        await first.commit()
        assert "order_summary" in await asyncio.wait_for(task, 10)
    finally:
        await other.close()
    await apply(conn, [Positioned(e, "t", 0, n) for n, e in enumerate([first_event, paid, refund])],
                projections=[TimelineProjection()])
    await assert_tables_match(conn, [first_event, paid, refund])
    # The refund came after the payment was known: it refunds the whole paid amount.
    assert (await stored_orders(conn))["upd"][order_store.VISIBLE.index("refunded_amount")] == D("6")


async def test_two_writers_lock_order_rows_in_one_key_order(pg_dsn: str, conn: asyncpg.Connection) -> None:
    """A write updates the rows it holds a version of and inserts those it assumes new (its
    batch brought their OrderPlaced). Two writers must lock all of them in one key order,
    or each can wait on the other: a deadlock (seen between two instances)."""
    await create_tables(conn)
    await apply(conn, [Positioned(placed(f"p{n}", f"X{n}", T0, "c", "s", 1, D("1"), D("1")), "t", 0, n)
                       for n in (1, 3)])
    stored = await order_store.load(conn, "order_summary", ["X1", "X3"])
    paid = {o: order_summary.fold_all(stored[o], [Event(f"pay-{o}", "PaymentSucceeded", o, T0, {})])
            for o in ("X1", "X3")}
    other = await asyncpg.connect(pg_dsn)
    try:
        theirs = other.transaction()
        await theirs.start()
        # They update X1 ...
        assert await order_store.write(
            other, "order_summary", [paid["X1"]], {"X1": order_store.fingerprint(stored["X1"])}) == []

        async def ours() -> list[str]:  # ... we update X3 and take X1 for new: X1 waits on them
            async with conn.transaction():
                return await order_store.write(
                    conn, "order_summary", [paid["X1"], paid["X3"]],
                    {"X3": order_store.fingerprint(stored["X3"])})

        task = asyncio.create_task(ours())
        await asyncio.sleep(0.5)
        assert not task.done()
        # ... and they take X3 for new: it must not wait on us (we hold nothing above X1 yet).
        lost = await asyncio.wait_for(order_store.write(other, "order_summary", [paid["X3"]], {}), 10)
        assert lost == ["X3"]
        await theirs.commit()
        assert await asyncio.wait_for(task, 10) == ["X1"]  # theirs since: reloaded by the projection
    finally:
        await other.close()


async def test_a_cached_row_whose_transaction_rolled_back_is_not_written(conn: asyncpg.Connection) -> None:
    """The row cache keeps what a transaction wrote even if it then rolled back: a later
    write from that copy must find the table without the row and fold again from nothing."""
    await create_tables(conn)
    first = placed("z1", "z", T0, "c", "s", 1, D("2"), D("2"))
    paid = Event("z2", "PaymentSucceeded", "z", T0 + timedelta(minutes=1), {"amount": None})
    orders = OrdersProjection()
    rolled_back = conn.transaction()
    await rolled_back.start()
    await orders.apply(conn, [Positioned(first, "t", 0, 0)], LOGICAL)
    await rolled_back.rollback()
    await apply(conn, [Positioned(paid, "t", 1, 0)], projections=[orders, TimelineProjection()])
    await assert_tables_match(conn, [paid])


async def test_stale_cached_rows_are_caught(conn: asyncpg.Connection) -> None:
    """A cached copy behind the table (another writer) or ahead of it (a rolled-back
    transaction of ours) never loses or double-counts an event."""
    await create_tables(conn)
    events = [
        placed("k1", "k", T0, "c", "s", 1, D("1"), D("1")),
        Event("k2", "PaymentSucceeded", "k", T0 + timedelta(minutes=1), {"amount": None}),
        Event("k3", "PaymentRefunded", "k", T0 + timedelta(minutes=2), {"amount": D("0.25")}),
        Event("k4", "OrderCancelled", "k", T0 + timedelta(minutes=3), {"reason": None}),
        Event("k5", "PaymentRefunded", "k", T0 + timedelta(minutes=4), {"amount": None}),
    ]
    at = [Positioned(e, "t", 0, n) for n, e in enumerate(events)]
    orders, timeline = OrdersProjection(), TimelineProjection()
    await apply(conn, at[:1], projections=[orders, timeline])
    assert len(orders.cache) == 1
    # Behind: another instance applies k2; our copy lacks it.
    await apply(conn, at[1:2], projections=[OrdersProjection(), timeline])
    await apply(conn, at[2:3], projections=[orders, timeline])
    await assert_tables_match(conn, events[:3])
    # Ahead: our transaction applies k4, then rolls back; the engine retries the batch.
    rolled_back = conn.transaction()
    await rolled_back.start()
    await orders.apply(conn, at[3:4], LOGICAL)
    await rolled_back.rollback()
    await apply(conn, at[3:4], projections=[orders, timeline])
    await assert_tables_match(conn, events[:4])
    # Ahead again, with a new event in the retried batch.
    rolled_back = conn.transaction()
    await rolled_back.start()
    await orders.apply(conn, at[4:5], LOGICAL)
    await rolled_back.rollback()
    await apply(conn, at[3:5], projections=[orders, timeline])
    await assert_tables_match(conn, events)
    assert (await stored_orders(conn))["k"][order_store.VISIBLE.index("refunded_amount")] == D("1.25")


async def test_stored_state_round_trips(conn: asyncpg.Connection) -> None:
    """Every winner kind, refunds with and without amounts, odd ids: a reload gives the fold."""
    await create_tables(conn)
    order = "r"
    events = [
        placed('a"1', order, T0, "c", "s", 3, D("0.10"), D("0.30")),
        Event("b\\2", "PaymentSucceeded", order, T0 + timedelta(seconds=1), {"amount": None}),
        Event("c3", "PaymentFailed", order, T0 + timedelta(microseconds=7), {"reason": "card"}),
        Event("d4", "InventoryReservationFailed", order, T0, {"reason": None}),
        Event("e5", "ShippingScheduled", order, T0, {"carrier": "DHL"}),
        Event("f6", "OrderShipped", order, T0, {"carrier": None, "tracking_number": "T\"1"}),
        Event("g7", "OrderCancelled", order, T0, {"reason": ""}),
        Event("h8", "PaymentRefunded", order, T0, {"amount": D("0.05")}),
        Event("i9", "PaymentRefunded", order, T0, {"amount": None}),
        Event("j10", "OrderDelivered", order, T0, {}),
        Event("k11", "InventoryReserved", order, T0, {}),
    ]
    await apply(conn, [Positioned(e, "t", 0, n) for n, e in enumerate(events)])
    await assert_tables_match(conn, events)
    assert (await stored_rows(conn))[order].merge_state == fold_everything(events)[order].merge_state


async def test_event_ids_that_need_quoting(conn: asyncpg.Connection) -> None:
    await create_tables(conn)
    ids = ['a,b', 'q"uote', "back\\slash", "{brace}", " space ", "NULL", "é"]
    events = [placed(ids[0], "w", T0, "c", "s", 1, D("1"), D("1"))] + [
        Event(i, "InventoryReserved", "w", T0 + timedelta(minutes=n), {}) for n, i in enumerate(ids[1:])
    ]
    for event in events:
        await apply(conn, [Positioned(event, "t", 0, 0)], projections=[OrdersProjection(0)])
    stored = await conn.fetchval("SELECT event_ids FROM order_summary")
    assert stored == sorted(ids)
    await apply(conn, [Positioned(e, "t", 0, 0) for e in events])
    await assert_tables_match(conn, events)


def test_row_cache_evicts_the_least_recently_written() -> None:
    cache: RowCache[str] = RowCache(2)
    cache.put("t", "a", "fa", "A")
    cache.put("t", "b", "fb", "B")
    cache.put("t", "a", "fa2", "A2")  # rewritten: now the most recent
    cache.put("t", "c", "fc", "C")
    assert cache.lookup("t", ["a", "b", "c"]) == {"a": ("fa2", "A2"), "c": ("fc", "C")}
    assert cache.lookup("other", ["a"]) == {}
    disabled: RowCache[str] = RowCache(0)
    disabled.put("t", "a", "f", "A")
    assert len(disabled) == 0
