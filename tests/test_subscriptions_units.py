"""The pure parts of subscriptions, table-driven: mailbox, cursor, fan-out, status changes, labels."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.cursor import ReadPlan, TableCursor, TxSnapshot, established
from api.fanout import Change, Registry, SlowConsumer, Watch
from api.mailbox import Mailbox, Put
from api.metrics import MAX_OPERATION_LABELS, ApiMetrics, operation_of
from api.sql.changes import FEED_TABLES
from api.types.order_status_change import OrderStatusChange

T0 = datetime(2024, 3, 1, tzinfo=UTC)


# -- mailbox ----------------------------------------------------------------------------------

async def test_mailbox_keeps_the_newest_state_in_the_first_place() -> None:
    box: Mailbox[str] = Mailbox(3)
    assert [box.put(k, v) for k, v in (("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("d", "d1"))] == [
        Put.ADDED, Put.ADDED, Put.COALESCED, Put.ADDED, Put.FULL]
    assert [await box.get() for _ in range(3)] == ["a2", "b1", "c1"]
    assert len(box) == 0


async def test_mailbox_get_waits_and_close_raises() -> None:
    box: Mailbox[int] = Mailbox(1)
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.put("k", 1)
    assert await waiting == 1
    box.put("k", 2)
    assert box.close(ValueError("gone")) == 1
    assert box.put("k", 3) is Put.CLOSED
    with pytest.raises(ValueError, match="gone"):
        await box.get()


def test_mailbox_needs_room() -> None:
    with pytest.raises(ValueError):
        Mailbox(0)


# -- cursor -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "foreign", "running"), [
    ("100:100:", (), set()),
    ("100:105:100,103", (), {100, 103}),
    ("100:105:100,103", (103,), {100}),
    # 64-bit ids in snapshots, 32-bit in xmin.
    (f"{2**32 + 7}:{2**32 + 9}:{2**32 + 7}", (), {7}),
])
def test_snapshot_parse(text: str, foreign: tuple[int, ...], running: set[int]) -> None:
    assert TxSnapshot.parse(text, foreign).running == running


def test_snapshot_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        TxSnapshot.parse("nope")


def _snap(*running: int) -> TxSnapshot:
    return TxSnapshot(frozenset(running))


def test_cursor_reads_above_its_sequence_when_nothing_ran() -> None:
    cursor = TableCursor(10, 1)
    plan = cursor.plan(_snap())
    assert plan == ReadPlan(10, 10, ())
    assert cursor.advance(plan, 15, _snap()) is False
    assert cursor.seq == 15


def test_cursor_looks_back_for_a_transaction_that_was_running() -> None:
    cursor = TableCursor(10, 1)
    # Read 1 ran while transaction 7 ran: 7 may hold sequences from 11 up; rows up to 20 read.
    first = cursor.plan(_snap())
    assert first == ReadPlan(10, 10, ())
    assert cursor.advance(first, 20, _snap(7)) is False
    # Read 2: 7 still running (as far as known); 8 seen running now.
    second = cursor.plan(_snap(7))
    assert second == ReadPlan(20, 20, ())
    assert cursor.advance(second, 25, _snap(7, 8)) is False
    assert cursor.suspects == {7: 10, 8: 20}
    # Read 3, planned while 7 was still running, ran after it finished: another read is owed.
    third = cursor.plan(_snap(7, 8))
    assert cursor.advance(third, None, _snap(8)) is True
    # Read 4: 7's rows above 10 are looked for; 8 runs on.
    fourth = cursor.plan(_snap(8))
    assert fourth == ReadPlan(10, 25, (7,), (25,))
    assert cursor.advance(fourth, None, _snap(8)) is False
    assert cursor.seq == 25 and cursor.suspects == {8: 20}
    # Read 5: 8 finished.
    assert cursor.plan(_snap()) == ReadPlan(20, 25, (8,), (25,))


def test_rows_a_read_returned_are_not_owed_again() -> None:
    cursor = TableCursor(10, 1)
    first = cursor.plan(_snap())
    assert cursor.advance(first, 20, _snap(7)) is False  # 7 ran: its rows may lie above 10
    # The next read is planned while 7 is known to run, but 7 finished before it ran:
    # it returned 7's rows above 20 (up to 30); those from 11 to 20 are still owed.
    second = cursor.plan(_snap(7))
    assert second == ReadPlan(20, 20, ())
    assert cursor.advance(second, 30, _snap()) is True
    third = cursor.plan(_snap())
    assert third == ReadPlan(10, 30, (7,), (20,))  # not up to 30: no row twice
    assert cursor.advance(third, None, _snap()) is False
    assert cursor.suspects == {} and cursor.bounds == {}


def test_cursor_reset_forgets_the_old_history() -> None:
    cursor = TableCursor(50, 1, {3: 40})
    cursor.reset(7, 2)
    assert (cursor.seq, cursor.oid, cursor.suspects) == (7, 2, {})


def test_established_cursor() -> None:
    cursor = established(first_top=100, top=120, oid=5, snapshot=TxSnapshot(frozenset({9, 11})),
                         stragglers={11})
    assert cursor.seq == 120 and cursor.suspects == {9: 100, 11: 0}


# -- fan-out ----------------------------------------------------------------------------------

def _order(order_id: str, customer: str | None, status: str, seq: int) -> Change:
    row = {"order_id": order_id, "customer_id": customer, "status": status, "updated_seq": seq}
    return Change("order_summary", order_id, row, seq, 0.0)


def _drain(box: Mailbox[Change]) -> list[tuple[str, str]]:
    out = []
    while len(box):
        change = box._items.popitem(last=False)[1]
        out.append((change.row["order_id"], change.row["status"]))
    return out


def test_dispatch_matches_keys_owners_statuses_and_status_changes() -> None:
    registry = Registry(FEED_TABLES, 100)
    watches = {
        "one": Watch("order_summary", "f", key="a"),
        "owner": Watch("order_summary", "f", owner="c1"),
        "one_of_owner": Watch("order_summary", "f", key="b", owner="c1"),
        "paid": Watch("order_summary", "f", statuses=frozenset({"PAID"})),
        "changes": Watch("order_summary", "f", status_changes_only=True),
    }
    subs = {}
    contexts = []
    for name, watch in watches.items():
        context = registry.subscribe(watch)
        subs[name] = context.__enter__()
        contexts.append(context)
    registry.dispatch([_order("a", "c1", "PLACED", 1), _order("b", "c2", "PAID", 2),
                       _order("a", "c1", "PLACED", 3), _order("a", "c1", "PAID", 4)])
    got = {name: _drain(sub.mailbox) for name, sub in subs.items()}
    assert got == {
        "one": [("a", "PAID")],
        "owner": [("a", "PAID")],
        "one_of_owner": [],  # b is c2's
        "paid": [("b", "PAID"), ("a", "PAID")],  # a entered the filter last
        "changes": [("a", "PAID"), ("b", "PAID")],  # a's second PLACED was no status change
    }
    assert not registry.interested("daily_sales") and registry.interested("order_summary")
    for context in contexts:
        context.__exit__(None, None, None)
    assert len(registry) == 0 and not registry.interested("order_summary")


def test_floor_skips_states_not_newer_than_the_first_message() -> None:
    registry = Registry(FEED_TABLES, 10)
    with registry.subscribe(Watch("order_summary", "f", key="a")) as sub:
        sub.floor = 5
        registry.dispatch([_order("a", None, "PLACED", 4), _order("a", None, "PLACED", 5)])
        assert len(sub.mailbox) == 0
        registry.dispatch([_order("a", None, "PAID", 6)])
        assert _drain(sub.mailbox) == [("a", "PAID")] and sub.floor is None


async def test_overflow_ends_the_subscription_with_slow_consumer() -> None:
    metrics = ApiMetrics()
    registry = Registry(FEED_TABLES, 2, metrics)
    with registry.subscribe(Watch("order_summary", "f")) as sub:
        registry.dispatch([_order(k, None, "PLACED", i) for i, k in enumerate("abc")])
        with pytest.raises(SlowConsumer):
            await sub.mailbox.get()
    assert metrics.dropped.labels("slow_consumer")._value.get() == 3


# -- status changes -----------------------------------------------------------------------------

def _row(status: str, **stages: datetime) -> dict[str, Any]:
    columns = ("placed_at", "inventory_reserved_at", "failed_at", "paid_at", "shipping_scheduled_at",
               "shipped_at", "delivered_at", "cancelled_at", "refunded_at")
    row: dict[str, Any] = dict.fromkeys(columns)
    row.update(order_id="o", customer_id="c", status=status, items=[], item_count=0, total_amount=None,
               currency=None, failure_reason=None, carrier=None, tracking_number=None, paid_amount=0,
               refunded_amount=0, last_event_at=T0 + timedelta(hours=9), event_count=1, updated_seq=1)
    row.update(stages)
    return row


@pytest.mark.parametrize(("status", "stages", "previous", "at"), [
    ("PLACED", {"placed_at": T0}, None, T0),
    ("PAID", {"placed_at": T0, "paid_at": T0 + timedelta(hours=1)}, "PLACED", T0 + timedelta(hours=1)),
    # A retried payment: it failed, then succeeded.
    ("PAID", {"placed_at": T0, "failed_at": T0 + timedelta(hours=1), "paid_at": T0 + timedelta(hours=2)},
     "FAILED", T0 + timedelta(hours=2)),
    # Shipped before anything else was known: no earlier stage; reached at the last event.
    ("SHIPPED", {}, None, T0 + timedelta(hours=9)),
])
def test_status_change_from_a_row(status: str, stages: dict[str, datetime], previous: str | None,
                                  at: datetime) -> None:
    change = OrderStatusChange.from_row(_row(status, **stages))
    assert change.status.value == status
    assert (change.previous_status.value if change.previous_status else None) == previous
    assert change.at == at


# -- metrics labels -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "name", "expected"), [
    ("{ a }", None, (None, "query")),
    ("query Q { a }", None, ("Q", "query")),
    ("subscription S { a }", None, ("S", "subscription")),
    ("query A { a } query B { b }", "B", ("B", "query")),
    ("query A { a } query B { b }", None, (None, "unknown")),
    ("{ nope", None, (None, "unknown")),
])
def test_operation_of(text: str, name: str | None, expected: tuple[str | None, str]) -> None:
    assert operation_of(text, name) == expected


def test_operation_labels_are_bounded() -> None:
    metrics = ApiMetrics()
    for i in range(MAX_OPERATION_LABELS + 50):
        metrics.request(f"op{i}", "query", True, 0.001)
    metrics.request("x" * 100, "query", True, 0.001)
    labels = {s.labels["operation"] for f in metrics.registry.collect() if f.name == "api_graphql_requests"
              for s in f.samples if s.name.endswith("_total")}
    assert len(labels) == MAX_OPERATION_LABELS + 1 and "other" in labels
