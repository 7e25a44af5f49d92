"""Broken records and stream disorder. Pure, bounded memory.

Every corruption is clearly invalid, and says which rejection reason the
decoder must give it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from projector.events import RejectReason
from projector.simulator.population import Weighted
from projector.simulator.wire import Encoded, dumps

T = TypeVar("T")
_Corruption = Callable[[Encoded, random.Random], tuple[bytes | None, bytes, RejectReason]]


def _truncated(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
    return enc.key, enc.value[: rng.randrange(1, len(enc.value) - 1)], RejectReason.INVALID_JSON


def _garbage(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
    junk = rng.choice((b"\xff\xfe\x00garbage", b"<order id='1'/>", b"", b"{'single': 'quotes'}"))
    return enc.key, junk, RejectReason.INVALID_JSON


def _not_object(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
    return enc.key, rng.choice((b"[" + enc.value + b"]", b'"OrderPlaced"', b"42", b"null")), (
        RejectReason.NOT_AN_OBJECT
    )


def _edited(edit: Callable[[dict[str, Any], dict[str, Any], random.Random], None],
            reason: RejectReason) -> _Corruption:
    def corrupt(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
        body = dict(enc.body)
        payload = dict(body["data"]) if enc.nested else body
        if enc.nested:
            body["data"] = payload
        body["event_id"] = f"{enc.event.event_id}-invalid-{rng.getrandbits(32):08x}"
        edit(body, payload, rng)
        return enc.key, dumps(body), reason

    return corrupt


def _schema_edit(body: dict[str, Any], payload: dict[str, Any], rng: random.Random) -> None:
    choice = rng.randrange(5)
    if choice == 0:
        del body["event_id"]
    elif choice == 1:
        body["timestamp"] = "yesterday"
    elif choice == 2:
        body["timestamp"] = 1_732_300_000_000  # milliseconds, past year 9999 as seconds
    elif choice == 3:
        payload["order_id"] = 12345
    elif "total_amount" in payload:
        payload["total_amount"] = -5
    elif "items" in payload:
        payload["items"] = []
    else:
        body["event_id"] = ""


def _set(field: str, value: Any) -> Callable[[dict[str, Any], dict[str, Any], random.Random], None]:
    def edit(body: dict[str, Any], payload: dict[str, Any], rng: random.Random) -> None:
        body[field] = value

    return edit


def _wrong_key(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
    return f"order-other-{rng.getrandbits(24)}".encode(), enc.value, RejectReason.KEY_MISMATCH


CORRUPTIONS: Weighted[_Corruption] = Weighted([
    (_truncated, 0.2),
    (_garbage, 0.1),
    (_not_object, 0.1),
    (_edited(_schema_edit, RejectReason.SCHEMA_VIOLATION), 0.3),
    (_edited(_set("event_type", "OrderTeleported"), RejectReason.UNKNOWN_EVENT_TYPE), 0.1),
    (_edited(_set("schema_version", 99), RejectReason.UNSUPPORTED_VERSION), 0.1),
    (_wrong_key, 0.1),
])


def corrupt(enc: Encoded, rng: random.Random) -> tuple[bytes | None, bytes, RejectReason]:
    """(key, value, expected reason) of an invalid record derived from ``enc``."""
    return CORRUPTIONS.draw(rng)(enc, rng)


def interleave(streams: Iterable[list[T]], concurrency: int, rng: random.Random) -> Iterator[T]:
    """Merge per-order lists, ``concurrency`` orders at a time, keeping each list's order."""
    pending = iter(streams)
    active: list[list[T]] = []
    cursors: list[int] = []
    while True:
        while len(active) < concurrency:
            nxt = next(pending, None)
            if nxt is None:
                break
            if nxt:
                active.append(nxt)
                cursors.append(0)
        if not active:
            return
        i = rng.randrange(len(active))
        yield active[i][cursors[i]]
        cursors[i] += 1
        if cursors[i] == len(active[i]):
            active[i] = active[-1]
            cursors[i] = cursors[-1]
            active.pop()
            cursors.pop()


def with_repeats(
    items: Iterable[T],
    fraction: float,
    rng: random.Random,
    eligible: Callable[[T], bool] = lambda _: True,
    max_delay: int = 50,
) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_repeat): each item, and with probability ``fraction`` once more later
    (only ``eligible`` items).

    A repeat comes 0..max_delay items after the original, so at most about
    ``max_delay * fraction`` repeats wait in memory.
    """
    waiting: list[tuple[int, int, T]] = []
    position = 0
    for item in items:
        while waiting and waiting[0][0] <= position:
            yield heapq.heappop(waiting)[2], True
            position += 1
        yield item, False
        position += 1
        if fraction and eligible(item) and rng.random() < fraction:
            heapq.heappush(waiting, (position + rng.randint(0, max_delay), position, item))
    while waiting:
        yield heapq.heappop(waiting)[2], True


def shuffled_window(items: Iterable[T], window: int, rng: random.Random) -> Iterator[T]:
    """A local shuffle: hold ``window`` items, emit a random one as each new one arrives."""
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= window:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer
