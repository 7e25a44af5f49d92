"""The ``order_summary`` read model: one row per order, folded from its events.

Events of one order arrive on different topics and partitions in any
interleaving, and any event may be delivered more than once. The row is
therefore a join-semilattice: its state is (the set of applied event ids, the
*winning* event of each type, the refunds by event id, the latest
``occurred_at``), each part merged by a commutative, idempotent rule, and every
visible column is derived from that state. Any interleaving, with any
duplication, gives the same row.

Status lattice
--------------
``status`` is the highest rank among the event types applied::

    PLACED < INVENTORY_RESERVED < FAILED < PAID < SHIPPING_SCHEDULED
           < SHIPPED < DELIVERED < CANCELLED < REFUNDED

================================  ====================
event type                        status
================================  ====================
OrderPlaced                       PLACED
InventoryReserved                 INVENTORY_RESERVED
InventoryReservationFailed        FAILED
PaymentFailed                     FAILED
PaymentSucceeded                  PAID
ShippingScheduled                 SHIPPING_SCHEDULED
OrderShipped                      SHIPPED
OrderDelivered                    DELIVERED
OrderCancelled                    CANCELLED
PaymentRefunded                   REFUNDED
================================  ====================

A later stage never regresses status; FAILED sits below PAID so that a payment
retried after a failure ends PAID. A row first created by another event than
OrderPlaced (say PaymentSucceeded) gets that event's status, and what it
carries; the order's own fields stay unknown until OrderPlaced arrives.

Merge rules
-----------
- Duplicates: an event whose ``event_id`` is already in ``event_ids`` changes
  nothing. ``event_ids`` is kept sorted; ``event_count`` is its length.
- The winning event of a type is the one with the least
  ``(occurred_at, event_id)``. Its ``occurred_at`` is the stage timestamp
  (``placed_at``, ``inventory_reserved_at``, ``paid_at``,
  ``shipping_scheduled_at``, ``shipped_at``, ``delivered_at``, ``cancelled_at``,
  ``refunded_at``), i.e. the earliest event of the type; ``failed_at`` is the
  earliest InventoryReservationFailed or PaymentFailed.
- Attributes come from the winning event of their type: ``customer_id``,
  ``items``, ``total_amount``, ``currency`` from OrderPlaced;
  ``tracking_number`` from OrderShipped; ``carrier`` from OrderShipped when it
  has one, else from ShippingScheduled.
- ``failure_reason`` is the reason of the winning event of the highest failure
  type present: OrderCancelled > PaymentFailed > InventoryReservationFailed.
  An absent or empty reason reads ``cancelled``, ``payment_failed`` or
  ``inventory_reservation_failed``.
- ``paid_amount`` is the winning PaymentSucceeded's ``amount``; without one, the
  order's ``total_amount`` if OrderPlaced is known, else 0. It is 0 while no
  payment succeeded. It is derived, so a later OrderPlaced fills it in.
- ``refunded_amount`` is the sum over distinct PaymentRefunded events of their
  ``amount``; a refund without an amount refunds the full ``paid_amount`` (as
  derived from the final state, so arrival order does not matter).
- ``item_count`` is the total quantity over ``items``; ``last_event_at`` the
  latest ``occurred_at``.
- Money is exact: Decimal arithmetic in a 100-digit context that traps
  rounding, ``numeric`` columns, and decimal *strings* inside jsonb.
- ``merge_state`` (jsonb) stores the winners and refunds, so a row can be
  reloaded and merged further; the other columns are derived from it::

    {"winners": {"<event type>": {"at": "<RFC 3339>", "id": "<event_id>",
                                  "attrs": {...}}, ...},
     "refunds": {"<event_id>": "<amount>" | null, ...}}

An ``event_id`` names one immutable event: two deliveries with the same id are
the same event, and only the first one applied is read.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from projector.errors import InternalError
from projector.events import Event
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident
from projector.projections.row_cache import RowCache

ZERO = Decimal(0)

# Money arithmetic goes through this context, never the thread's default one
# (28 digits): contract amounts have up to 30 digits, and PostgreSQL's numeric
# is exact. Rounding would make the fold disagree with SQL sums, so it traps.
MONEY = decimal.Context(
    prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero]
)

STATUSES: tuple[str, ...] = (
    "PLACED",
    "INVENTORY_RESERVED",
    "FAILED",
    "PAID",
    "SHIPPING_SCHEDULED",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
    "REFUNDED",
)

STATUS_OF: Mapping[str, str] = {
    "OrderPlaced": "PLACED",
    "InventoryReserved": "INVENTORY_RESERVED",
    "InventoryReservationFailed": "FAILED",
    "PaymentFailed": "FAILED",
    "PaymentSucceeded": "PAID",
    "ShippingScheduled": "SHIPPING_SCHEDULED",
    "OrderShipped": "SHIPPED",
    "OrderDelivered": "DELIVERED",
    "OrderCancelled": "CANCELLED",
    "PaymentRefunded": "REFUNDED",
}

_RANK_OF_TYPE: Mapping[str, int] = {t: STATUSES.index(s) for t, s in STATUS_OF.items()}



class LineItem(NamedTuple):
    """One line of an order; ``unit_price`` may be unknown."""

    sku: str
    qty: int
    unit_price: Decimal | None


# The value types below are NamedTuples rather than frozen dataclasses: they
# are built for every changed order of every batch, and a frozen dataclass's
# __init__ (one object.__setattr__ per field) costs ~7x more for OrderRow's 25.


class Winner(NamedTuple):
    """The winning (least ``(occurred_at, event_id)``) event of one type.

    ``attrs`` holds only the fields the derivation reads, already typed
    (money as Decimal, items as a tuple of :class:`LineItem`). ``json`` is this
    winner's entry in ``merge_state``, encoded once when it wins: a row is
    written after every event, its winners rarely change. Build with
    :func:`winner`.
    """

    occurred_at: datetime
    event_id: str
    attrs: Mapping[str, Any]
    json: str


def winner(occurred_at: datetime, event_id: str, attrs: Mapping[str, Any]) -> Winner:
    """A :class:`Winner` with its ``merge_state`` entry ``{"at", "id", "attrs"?}``."""
    entry: dict[str, Any] = {"at": occurred_at, "id": event_id}
    if attrs:
        entry["attrs"] = {
            key: _items_jsonable(value) if key == "items" else _jsonable(value)
            for key, value in attrs.items()
        }
    # Sorted keys: the same winner decoded from jsonb (which reorders keys) encodes the same.
    # Kept as str: orjson's bytes keep a 4 KiB buffer, too much for every cached winner.
    json = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()
    return Winner(occurred_at, event_id, attrs, json)


class MergeState(NamedTuple):
    """Everything the columns are derived from; never mutated after creation."""

    winners: Mapping[str, Winner]
    # Refund amount per PaymentRefunded event id; None means "the full paid amount".
    refunds: Mapping[str, Decimal | None]


class OrderRow(NamedTuple):
    """One ``order_summary`` row (without ``updated_seq``, which the database assigns)."""

    order_id: str
    customer_id: str | None
    status: str
    items: tuple[LineItem, ...]
    item_count: int
    total_amount: Decimal | None
    currency: str | None
    placed_at: datetime | None
    inventory_reserved_at: datetime | None
    failed_at: datetime | None
    paid_at: datetime | None
    shipping_scheduled_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    refunded_at: datetime | None
    failure_reason: str | None
    carrier: str | None
    tracking_number: str | None
    paid_amount: Decimal
    refunded_amount: Decimal
    last_event_at: datetime
    event_count: int
    event_ids: tuple[str, ...]
    merge_state: MergeState


# --- the fold ---------------------------------------------------------------


def _money(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    # The decoder hands us Decimals; anything else is converted exactly via str.
    return Decimal(str(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _items(value: Any) -> tuple[LineItem, ...]:
    if not value:
        return ()
    return tuple(
        LineItem(str(i["sku"]), int(i["qty"]), _money(i.get("unit_price"))) for i in value
    )


_NO_ATTRS: Mapping[str, Any] = {}


def _placed_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {
        "customer_id": _text(p.get("customer_id")),
        "items": _items(p.get("items")),
        "total_amount": _money(p.get("total_amount")),
        "currency": _text(p.get("currency")),
    }


def _reason_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"reason": _text(p.get("reason"))}


def _payment_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"amount": _money(p.get("amount"))}


def _scheduled_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"carrier": _text(p.get("carrier"))}


def _shipped_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"tracking_number": _text(p.get("tracking_number")), "carrier": _text(p.get("carrier"))}


def _no_attrs(p: Mapping[str, Any]) -> Mapping[str, Any]:
    return _NO_ATTRS


# The per-type handlers: what a winning event of the type contributes.
# PaymentRefunded keeps its amount in MergeState.refunds instead (every refund counts).
HANDLERS: Mapping[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]] = {
    "OrderPlaced": _placed_attrs,
    "OrderCancelled": _reason_attrs,
    "InventoryReserved": _no_attrs,
    "InventoryReservationFailed": _reason_attrs,
    "PaymentSucceeded": _payment_attrs,
    "PaymentFailed": _reason_attrs,
    "PaymentRefunded": _no_attrs,
    "ShippingScheduled": _scheduled_attrs,
    "OrderShipped": _shipped_attrs,
    "OrderDelivered": _no_attrs,
}


def fold(row: OrderRow | None, event: Event) -> OrderRow:
    """Merge one event into an order's row (``None``: the order is new).

    Pure, idempotent (an applied ``event_id`` returns ``row`` itself) and
    commutative over distinct events. Raises :class:`InternalError` for an
    event type without a handler or an event of another order.
    """
    return fold_all(row, (event,))


def fold_all(row: OrderRow | None, events: Iterable[Event]) -> OrderRow:
    """Merge many events of one order at once; same result as folding one by one.

    Derives the columns once at the end, which is what makes batches cheap.
    Returns ``row`` itself (the same object) when every event was already applied.
    """
    if row is None:
        order_id: str | None = None
        seen: set[str] = set()
        winners: dict[str, Winner] = {}
        refunds: dict[str, Decimal | None] = {}
        last: datetime | None = None
    else:
        order_id = row.order_id
        seen = set(row.event_ids)
        winners = dict(row.merge_state.winners)
        refunds = dict(row.merge_state.refunds)
        last = row.last_event_at
    changed = False
    for event in events:
        event_id = event.event_id
        if event_id in seen:
            continue
        event_type = event.event_type
        handler = HANDLERS.get(event_type)
        if handler is None:
            raise InternalError(
                f"fold: no handler for event_type {event_type!r} (event_id={event_id!r})"
            )
        if order_id is None:
            order_id = event.order_id
        elif event.order_id != order_id:
            raise InternalError(
                f"fold: event {event_id!r} of order {event.order_id!r} folded into {order_id!r}"
            )
        seen.add(event_id)
        changed = True
        at = event.occurred_at
        if last is None or at > last:
            last = at
        current = winners.get(event_type)
        if current is None or (at, event_id) < (current.occurred_at, current.event_id):
            winners[event_type] = winner(at, event_id, handler(event.payload))
        if event_type == "PaymentRefunded":
            refunds[event_id] = _money(event.payload.get("amount"))
    if not changed:
        if row is None:
            raise InternalError("fold_all: no event to create an order row from")
        return row
    assert order_id is not None and last is not None  # set by the first new event
    return derive(order_id, MergeState(winners, refunds), tuple(sorted(seen)), last)


def derive(
    order_id: str, state: MergeState, event_ids: tuple[str, ...], last_event_at: datetime
) -> OrderRow:
    """Compute every column from the merge state (the only place rules live)."""
    w = state.winners
    if not w:
        raise InternalError(f"derive: order {order_id!r} has no winning event")
    get = w.get
    placed = get("OrderPlaced")
    paid = get("PaymentSucceeded")
    scheduled = get("ShippingScheduled")
    shipped = get("OrderShipped")
    inventory_failed = get("InventoryReservationFailed")
    payment_failed = get("PaymentFailed")
    cancelled = get("OrderCancelled")

    if placed is not None:
        pa = placed.attrs
        items: tuple[LineItem, ...] = pa["items"]
        total: Decimal | None = pa["total_amount"]
    else:
        pa, items, total = _NO_ATTRS, (), None

    if paid is None:
        paid_amount = ZERO
    else:
        paid_with = paid.attrs["amount"]
        paid_amount = paid_with if paid_with is not None else (total if total is not None else ZERO)
    refunded = ZERO
    if state.refunds:
        # Summed in event-id order: exact anyway (MONEY traps rounding), and fixed.
        for _, amount in sorted(state.refunds.items()):
            refunded = MONEY.add(refunded, paid_amount if amount is None else amount)

    failure_reason: str | None = None
    if cancelled is not None:
        failure_reason = cancelled.attrs["reason"] or "cancelled"
    elif payment_failed is not None:
        failure_reason = payment_failed.attrs["reason"] or "payment_failed"
    elif inventory_failed is not None:
        failure_reason = inventory_failed.attrs["reason"] or "inventory_reservation_failed"
    if inventory_failed is None:
        failed_at = None if payment_failed is None else payment_failed.occurred_at
    elif payment_failed is None:
        failed_at = inventory_failed.occurred_at
    else:
        failed_at = min(inventory_failed.occurred_at, payment_failed.occurred_at)
    carrier = shipped.attrs["carrier"] if shipped is not None else None
    if carrier is None and scheduled is not None:
        carrier = scheduled.attrs["carrier"]
    delivered = get("OrderDelivered")
    reserved = get("InventoryReserved")
    first_refund = get("PaymentRefunded")

    # Positional, in field order: keyword construction costs 3x as much here.
    return OrderRow(
        order_id,
        pa.get("customer_id"),
        STATUSES[max(map(_RANK_OF_TYPE.__getitem__, w))],
        items,
        sum(i.qty for i in items),
        total,
        pa.get("currency"),
        None if placed is None else placed.occurred_at,
        None if reserved is None else reserved.occurred_at,
        failed_at,
        None if paid is None else paid.occurred_at,
        None if scheduled is None else scheduled.occurred_at,
        None if shipped is None else shipped.occurred_at,
        None if delivered is None else delivered.occurred_at,
        None if cancelled is None else cancelled.occurred_at,
        None if first_refund is None else first_refund.occurred_at,
        failure_reason,
        carrier,
        None if shipped is None else shipped.attrs["tracking_number"],
        paid_amount,
        refunded,
        last_event_at,
        len(event_ids),
        event_ids,
        state,
    )


# --- encoding ---------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    # Money as a string, not a JSON number: exact, whatever reads the jsonb.
    return str(value) if isinstance(value, Decimal) else value


def _items_jsonable(items: Sequence[LineItem]) -> list[dict[str, Any]]:
    return [{"sku": i.sku, "qty": i.qty, "unit_price": _jsonable(i.unit_price)} for i in items]


def items_json(items: Sequence[LineItem]) -> str:
    """The ``items`` column: ``[{"sku", "qty", "unit_price": "12.50" | null}, ...]``."""
    return orjson.dumps(_items_jsonable(items)).decode()


def encode_state(state: MergeState) -> str:
    """``merge_state`` as JSON text: winners by type (``at``, ``id``, ``attrs``) and refunds."""
    winners = {event_type: orjson.Fragment(w.json) for event_type, w in state.winners.items()}
    refunds = {event_id: _jsonable(amount) for event_id, amount in state.refunds.items()}
    return orjson.dumps({"winners": winners, "refunds": refunds}).decode()


def _decode_attrs(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "items":
            out[key] = _items(value)
        elif key in ("total_amount", "amount"):
            out[key] = None if value is None else Decimal(value)
        else:
            out[key] = value
    return out


def decode_state(text: str | bytes) -> MergeState:
    """Inverse of :func:`encode_state`."""
    raw = orjson.loads(text)
    winners = {
        event_type: winner(
            datetime.fromisoformat(w["at"]),
            w["id"],
            _decode_attrs(w["attrs"]) if "attrs" in w else _NO_ATTRS,
        )
        for event_type, w in raw["winners"].items()
    }
    refunds = {k: None if v is None else Decimal(v) for k, v in raw["refunds"].items()}
    return MergeState(winners, refunds)


def _text_array(values: Sequence[str]) -> str:
    # A text[] literal, every element quoted: ids may hold commas, braces or
    # spaces. (A text[][] parameter would not do: unnest() flattens it.)
    if not values:
        return "{}"
    plain = "".join(values)
    if '"' in plain or "\\" in plain:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


# --- SQL --------------------------------------------------------------------

# (column, column type, type of the unnest() parameter array). Money, jsonb and
# text[] travel as text and are cast in the SELECT: asyncpg's binary numeric
# encoder costs ~3x a str(), and a text[][] parameter cannot be unnested per row.
_COLUMN_TYPES: tuple[tuple[str, str, str], ...] = (
    ("order_id", "text PRIMARY KEY", "text"),
    ("customer_id", "text", "text"),
    ("status", "text NOT NULL", "text"),
    ("items", "jsonb NOT NULL", "text"),
    ("item_count", "integer NOT NULL", "int4"),
    ("total_amount", "numeric", "text"),
    ("currency", "text", "text"),
    ("placed_at", "timestamptz", "timestamptz"),
    ("inventory_reserved_at", "timestamptz", "timestamptz"),
    ("failed_at", "timestamptz", "timestamptz"),
    ("paid_at", "timestamptz", "timestamptz"),
    ("shipping_scheduled_at", "timestamptz", "timestamptz"),
    ("shipped_at", "timestamptz", "timestamptz"),
    ("delivered_at", "timestamptz", "timestamptz"),
    ("cancelled_at", "timestamptz", "timestamptz"),
    ("refunded_at", "timestamptz", "timestamptz"),
    ("failure_reason", "text", "text"),
    ("carrier", "text", "text"),
    ("tracking_number", "text", "text"),
    ("paid_amount", "numeric NOT NULL", "text"),
    ("refunded_amount", "numeric NOT NULL", "text"),
    ("last_event_at", "timestamptz NOT NULL", "timestamptz"),
    ("event_count", "integer NOT NULL", "int4"),
    ("event_ids", "text[] NOT NULL", "text"),
    ("merge_state", "jsonb NOT NULL", "text"),
)

COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in _COLUMN_TYPES)


def record(row: OrderRow) -> tuple[Any, ...]:
    """The row's values in :data:`COLUMNS` order, as the upsert's parameter arrays take them."""
    total = row.total_amount
    return (
        row.order_id,
        row.customer_id,
        row.status,
        items_json(row.items),
        row.item_count,
        None if total is None else str(total),
        row.currency,
        row.placed_at,
        row.inventory_reserved_at,
        row.failed_at,
        row.paid_at,
        row.shipping_scheduled_at,
        row.shipped_at,
        row.delivered_at,
        row.cancelled_at,
        row.refunded_at,
        row.failure_reason,
        row.carrier,
        row.tracking_number,
        str(row.paid_amount),
        str(row.refunded_amount),
        row.last_event_at,
        row.event_count,
        _text_array(row.event_ids),
        encode_state(row.merge_state),
    )


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``order_summary`` under ``table``."""
    t = quote_ident(table)
    columns = ",\n    ".join(f"{c} {ctype}" for c, ctype, _ in _COLUMN_TYPES)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n    {columns},\n    updated_seq bigint NOT NULL\n)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'customer_placed_idx')} "
        f"ON {t} (customer_id, placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'placed_idx')} ON {t} (placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'status_placed_idx')} "
        f"ON {t} (status, placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'total_idx')} ON {t} (total_amount DESC, order_id)",
    ]


@functools.lru_cache(maxsize=64)
def _load_sql(table: str) -> str:
    # $2 holds, per order, the event_ids of the copy the cache has (NULL: none);
    # a row that still has them is not sent again (see row_cache). ORDER BY
    # under FOR UPDATE locks rows in key order, so two instances with
    # overlapping batches cannot deadlock on this statement.
    return (
        "SELECT o.order_id, CASE WHEN o.event_ids = c.ids::text[] THEN NULL "
        "ELSE o.merge_state::text END, o.event_ids, o.last_event_at "
        f"FROM unnest($1::text[], $2::text[]) AS c(order_id, ids) JOIN {quote_ident(table)} AS o "
        "ON o.order_id = c.order_id ORDER BY o.order_id FOR UPDATE OF o"
    )


@functools.lru_cache(maxsize=64)
def _upsert_sql(table: str) -> str:
    params = ", ".join(f"${n}::{ptype}[]" for n, (_, _, ptype) in enumerate(_COLUMN_TYPES, 1))
    names = ", ".join(COLUMNS)
    select = ", ".join(
        f"u.{c}::{ctype.split(' ')[0]}" if ctype.split(" ")[0] != ptype else f"u.{c}"
        for c, ctype, ptype in _COLUMN_TYPES
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*COLUMNS[1:], "updated_seq"))
    # The WHERE turns a lost race into a skipped row instead of a lost update: a
    # row inserted concurrently by another instance (after our load saw none)
    # is overwritten only if our event set covers its own, since the row is a
    # function of its event set. The caller reloads and re-folds skipped rows.
    return (
        f"INSERT INTO {quote_ident(table)} AS t ({names}, updated_seq) "
        f"SELECT {select}, nextval('{UPDATED_SEQ}') FROM unnest({params}) AS u({names}) "
        f"ON CONFLICT (order_id) DO UPDATE SET {updates} "
        "WHERE t.event_ids <@ excluded.event_ids "
        "RETURNING order_id"
    )


async def load(
    conn: Any, table: str, order_ids: Sequence[str], cache: RowCache[OrderRow] | None = None
) -> dict[str, OrderRow]:
    """Lock and load the existing rows of ``order_ids`` (sorted), in one statement.

    Rows the database confirms ``cache`` holds (same ``event_ids``) are neither
    sent nor decoded.
    """
    cached = cache.lookup(table, order_ids) if cache is not None else {}
    fingerprints = [cached[i][0] if i in cached else None for i in order_ids] if cached else None
    records = await conn.fetch(_load_sql(table), order_ids, fingerprints)
    rows: dict[str, OrderRow] = {}
    for order_id, state, event_ids, last_event_at in records:
        if state is None:
            rows[order_id] = cached[order_id][1]
        else:
            rows[order_id] = derive(order_id, decode_state(state), tuple(event_ids), last_event_at)
    return rows


_EVENT_IDS_AT = COLUMNS.index("event_ids")


async def write(
    conn: Any, table: str, rows: Sequence[OrderRow], cache: RowCache[OrderRow] | None = None
) -> list[str]:
    """Upsert ``rows`` (sorted by order_id) in one statement; remember them in ``cache``.

    Returns the order ids *not* written because another transaction created
    the row meanwhile with events we have not seen; reload and re-fold those.
    """
    if not rows:
        return []
    columns = list(zip(*(record(r) for r in rows), strict=True))
    written = await conn.fetch(_upsert_sql(table), *columns)
    if cache is not None:
        fingerprints = columns[_EVENT_IDS_AT]
        for row, fingerprint in zip(rows, fingerprints, strict=True):
            cache.put(table, row.order_id, fingerprint, row)
    if len(written) == len(rows):
        return []
    done = {r[0] for r in written}
    return [r.order_id for r in rows if r.order_id not in done]
