"""The ``order_summary`` table: its columns, the stored merge state, load and write.

A row is stored as its visible columns plus ``merge_state``, a small jsonb
with only what the columns do not show but a further merge needs::

    {"placed": "<event_id>",
     "paid": ["<event_id>", "<amount>" | null],
     "scheduled": ["<event_id>", "<carrier>" | null],
     "shipped": ["<event_id>", "<carrier>" | null],
     "cancelled": ["<event_id>", "<reason>" | null],
     "payment_failed": ["<event_id>", "<RFC 3339>", "<reason>" | null],
     "inventory_failed": ["<event_id>", "<RFC 3339>", "<reason>" | null],
     "refunds": ["<sum of the amounts given>", <refunds without amount>]}

(a key only when the order has that event). The winners' times are the stage
columns, the OrderPlaced attributes are ``customer_id``, ``items``,
``total_amount`` and ``currency``, OrderShipped's tracking number is
``tracking_number``. :func:`from_stored` rebuilds the exact
:class:`~projector.projections.order_summary.OrderRow` from both.

Writes are compare-and-set on ``event_ids`` (see :func:`write`): a row changes
only if the table still holds the version it was folded from. Since a row is
a function of its event set, the aggregate deltas computed from that version
are exact, whatever other instances or rolled-back transactions did.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from projector.errors import InternalError
from projector.projections import _rows
from projector.projections._names import UPDATED_SEQ, index_name, quote_ident
from projector.projections.order_summary import (
    LineItem,
    MergeState,
    OrderRow,
    Winner,
    derive,
    placed_attrs,
)
from projector.projections.row_cache import RowCache

# (column, column type). The row is sent as one jsonb array per order, in
# this order; the SQL casts each element (money travels as a decimal string).
_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("order_id", "text PRIMARY KEY"),
    ("customer_id", "text"),
    ("status", "text NOT NULL"),
    ("items", "jsonb NOT NULL"),
    ("item_count", "integer NOT NULL"),
    ("total_amount", "numeric"),
    ("currency", "text"),
    ("placed_at", "timestamptz"),
    ("inventory_reserved_at", "timestamptz"),
    ("failed_at", "timestamptz"),
    ("paid_at", "timestamptz"),
    ("shipping_scheduled_at", "timestamptz"),
    ("shipped_at", "timestamptz"),
    ("delivered_at", "timestamptz"),
    ("cancelled_at", "timestamptz"),
    ("refunded_at", "timestamptz"),
    ("failure_reason", "text"),
    ("carrier", "text"),
    ("tracking_number", "text"),
    ("paid_amount", "numeric NOT NULL"),
    ("refunded_amount", "numeric NOT NULL"),
    ("last_event_at", "timestamptz NOT NULL"),
    ("event_count", "integer NOT NULL"),
    ("event_ids", "text[] NOT NULL"),
    ("merge_state", "jsonb NOT NULL"),
)

COLUMNS: tuple[str, ...] = tuple(c for c, _ in _COLUMN_TYPES)
_EVENT_IDS_AT = COLUMNS.index("event_ids")
VISIBLE: tuple[str, ...] = COLUMNS[:-1]
"""The columns that show the row; ``merge_state`` only serves further merges."""

# Room for a new version of a row on its own page. Most updates change the
# indexed status and cannot be HOT; those that do not (an event arriving after
# a later stage, 2-10% in the benchmark) can, and so skip all five indexes.
_FILLFACTOR = 85

# --- encoding ---------------------------------------------------------------------------


def _text_array(values: Sequence[str]) -> str:
    # A text[] literal, every element quoted: ids may hold commas, braces or spaces.
    if not values:
        return "{}"
    plain = "".join(values)
    if '"' in plain or "\\" in plain:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


def fingerprint(row: OrderRow) -> str:
    """What a write compares with the stored row: its ``event_ids`` as a text[] literal."""
    return _text_array(row.event_ids)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def encode_state(state: MergeState) -> str:
    """The ``merge_state`` jsonb text of ``state`` (see the module docstring)."""
    w = state.winners
    out: dict[str, Any] = {}
    if (won := w.get("OrderPlaced")) is not None:
        out["placed"] = won.event_id
    if (won := w.get("PaymentSucceeded")) is not None:
        out["paid"] = [won.event_id, _str(won.attrs["amount"])]
    if (won := w.get("ShippingScheduled")) is not None:
        out["scheduled"] = [won.event_id, won.attrs["carrier"]]
    if (won := w.get("OrderShipped")) is not None:
        out["shipped"] = [won.event_id, won.attrs["carrier"]]
    if (won := w.get("OrderCancelled")) is not None:
        out["cancelled"] = [won.event_id, won.attrs["reason"]]
    if (won := w.get("PaymentFailed")) is not None:
        out["payment_failed"] = [won.event_id, won.occurred_at, won.attrs["reason"]]
    if (won := w.get("InventoryReservationFailed")) is not None:
        out["inventory_failed"] = [won.event_id, won.occurred_at, won.attrs["reason"]]
    if state.refunded or state.full_refunds:
        out["refunds"] = [str(state.refunded), state.full_refunds]
    return orjson.dumps(out).decode()


def record(row: OrderRow) -> list[Any]:
    """The row's values in :data:`COLUMNS` order, as the write's jsonb carries them."""
    # One unpacking instead of 25 attribute lookups: this runs for every written row.
    (order_id, customer_id, status, _, item_count, total, currency, placed_at, reserved_at,
     failed_at, paid_at, scheduled_at, shipped_at, delivered_at, cancelled_at, refunded_at,
     failure_reason, carrier, tracking_number, paid_amount, refunded_amount, last_event_at,
     event_count, event_ids, state) = row
    placed = state.winners.get("OrderPlaced")
    return [
        order_id, customer_id, status,
        orjson.Fragment(placed.attrs["items_json"] if placed is not None else "[]"),
        item_count, None if total is None else str(total), currency,
        placed_at, reserved_at, failed_at, paid_at, scheduled_at, shipped_at, delivered_at,
        cancelled_at, refunded_at, failure_reason, carrier, tracking_number,
        str(paid_amount), str(refunded_amount), last_event_at, event_count,
        _text_array(event_ids), orjson.Fragment(encode_state(state)),
    ]


# --- decoding -----------------------------------------------------------------------------

STORED: tuple[str, ...] = (
    "order_id", "customer_id", "items", "total_amount", "currency", "placed_at",
    "inventory_reserved_at", "paid_at", "shipping_scheduled_at", "shipped_at", "delivered_at",
    "cancelled_at", "refunded_at", "tracking_number", "last_event_at", "event_ids", "merge_state",
)
"""The columns :func:`from_stored` reads, in its argument order."""

# The types whose winner is only a time: present when their stage column is set.
_TIME_COLUMNS = tuple(
    (event_type, STORED.index(column))
    for event_type, column in (("InventoryReserved", "inventory_reserved_at"),
                               ("OrderDelivered", "delivered_at"), ("PaymentRefunded", "refunded_at"))
)


def _line_items(raw: Sequence[Mapping[str, Any]]) -> tuple[LineItem, ...]:
    return tuple(
        LineItem(i["sku"], i["qty"], None if i["unit_price"] is None else Decimal(i["unit_price"]))
        for i in raw
    )


def _failed(pair: Sequence[Any]) -> Winner:
    return Winner(datetime.fromisoformat(pair[1]), pair[0], {"reason": pair[2]})


def from_stored(values: Sequence[Any]) -> OrderRow:
    """The row stored as ``values`` (the :data:`STORED` columns, ``items`` and
    ``merge_state`` as JSON text); equal to the fold of the same events."""
    (order_id, customer_id, items, total, currency, placed_at, _, paid_at, scheduled_at,
     shipped_at, _, cancelled_at, _, tracking, last_event_at, event_ids, state) = values
    raw = orjson.loads(state)
    if "winners" in raw:
        raise InternalError(
            f"order_summary row {order_id!r} was stored by orders version 1 (its merge_state "
            "holds 'winners'); rebuild the projection: `projector rebuild orders`"
        )
    w: dict[str, Winner] = {}
    if placed_at is not None:
        attrs = placed_attrs(customer_id, _line_items(orjson.loads(items)), total, currency)
        w["OrderPlaced"] = Winner(placed_at, raw["placed"], attrs)
    if paid_at is not None:
        paid = raw["paid"]
        amount = None if paid[1] is None else Decimal(paid[1])
        w["PaymentSucceeded"] = Winner(paid_at, paid[0], {"amount": amount})
    if scheduled_at is not None:
        w["ShippingScheduled"] = Winner(scheduled_at, raw["scheduled"][0], {"carrier": raw["scheduled"][1]})
    if shipped_at is not None:
        shipped = raw["shipped"]
        w["OrderShipped"] = Winner(shipped_at, shipped[0],
                                   {"tracking_number": tracking, "carrier": shipped[1]})
    if cancelled_at is not None:
        w["OrderCancelled"] = Winner(cancelled_at, raw["cancelled"][0], {"reason": raw["cancelled"][1]})
    if "payment_failed" in raw:
        w["PaymentFailed"] = _failed(raw["payment_failed"])
    if "inventory_failed" in raw:
        w["InventoryReservationFailed"] = _failed(raw["inventory_failed"])
    for event_type, at in _TIME_COLUMNS:
        if values[at] is not None:
            w[event_type] = Winner(values[at], "", {})
    refunded, full = raw.get("refunds", ("0", 0))
    # Key order of the winners does not matter: MergeState compares as a mapping.
    return derive(order_id, MergeState(w, Decimal(refunded), full), tuple(event_ids), last_event_at)


# --- SQL --------------------------------------------------------------------------------------


def ddl(table: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for ``order_summary`` under ``table``.

    Four secondary indexes are the API's orderings, the fifth (``updated_seq``)
    serves the API's change feed, which reads the rows written since the
    sequence it last delivered; nothing else is indexed.
    """
    t = quote_ident(table)
    columns = ",\n    ".join(f"{c} {ctype}" for c, ctype in _COLUMN_TYPES)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (\n    {columns},\n    updated_seq bigint NOT NULL\n) "
        f"WITH (fillfactor = {_FILLFACTOR})",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'customer_placed_idx')} "
        f"ON {t} (customer_id, placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'placed_idx')} ON {t} (placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'status_placed_idx')} "
        f"ON {t} (status, placed_at DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'total_idx')} ON {t} (total_amount DESC, order_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(table, 'updated_seq_idx')} ON {t} (updated_seq)",
    ]


@functools.lru_cache(maxsize=64)
def _load_sql(table: str, lock: bool) -> str:
    columns = ", ".join(f"{c}::text" if c in ("items", "merge_state") else c for c in STORED)
    # ORDER BY under FOR UPDATE locks rows in key order, as every writer here does.
    tail = " ORDER BY order_id FOR UPDATE" if lock else ""
    return f"SELECT {columns} FROM {quote_ident(table)} WHERE order_id = ANY($1::text[]){tail}"


@functools.lru_cache(maxsize=64)
def _write_sql(table: str) -> str:
    t = quote_ident(table)
    values = _rows.fields([ctype.split(" ")[0] for _, ctype in _COLUMN_TYPES])
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    # $1: the rows, in key order; $2: {order_id: the event_ids the row was folded from} for
    # the rows the table holds (compare-and-set). One upsert, so that every writer locks
    # order rows in one key order: an UPDATE of the rows held then an INSERT of the new ones
    # locked in two, and two writers could each wait on the other (a deadlock). ON CONFLICT
    # locks the row even where the comparison fails: a row absent from $2 (taken for new)
    # or changed meanwhile is left alone and not returned, so it is lost, to be reloaded. A row
    # held but absent (a copy a rolled-back transaction cached) is not inserted: lost too, as
    # its deltas were computed against that copy (rows are never deleted, so a row found
    # conflicts and is compared). $3: the held order ids, found through the primary key.
    return (
        f"WITH written AS (INSERT INTO {t} AS o ({', '.join(COLUMNS)}, updated_seq) "
        f"SELECT {', '.join(values)}, nextval('{UPDATED_SEQ}') FROM jsonb_array_elements($1::jsonb) AS r "
        f"WHERE NOT $2::jsonb ? (r->>0) OR r->>0 IN (SELECT x.order_id FROM {t} AS x "
        "WHERE x.order_id = ANY($3::text[])) "
        f"ON CONFLICT (order_id) DO UPDATE SET {sets}, updated_seq = EXCLUDED.updated_seq "
        "WHERE o.event_ids = ($2::jsonb ->> EXCLUDED.order_id)::text[] RETURNING o.order_id) "
        "SELECT array_agg(order_id) FROM written"
    )


async def load(
    conn: Any, table: str, order_ids: Sequence[str], *, lock: bool = False
) -> dict[str, OrderRow]:
    """The stored rows of ``order_ids`` (those that exist), in one statement.

    ``lock``: FOR UPDATE, in key order; then a write of these rows cannot lose
    its compare-and-set to another transaction.
    """
    if not order_ids:
        return {}
    records = await conn.fetch(_load_sql(table, lock), order_ids)
    return {r[0]: from_stored(r) for r in records}


class Encoded(NamedTuple):
    """Rows encoded for :func:`write_encoded`, in key order: each with its
    fingerprint and its values; and the fingerprints the table should hold."""

    rows: list[tuple[OrderRow, str, list[Any]]]
    held: dict[str, str]


def encode(rows: Sequence[OrderRow], expected: Mapping[str, str | None]) -> Encoded:
    """The write of ``rows`` (sorted by order_id) against ``expected`` (see :func:`write`)."""
    out = Encoded([], {})
    encode_into(out, rows, expected)
    return out


def encode_into(encoded: Encoded, rows: Sequence[OrderRow], expected: Mapping[str, str | None]) -> None:
    """Add ``rows`` (sorted by order_id, after those ``encoded`` has) to ``encoded``."""
    out, held = encoded.rows, encoded.held
    for row in rows:
        values = record(row)
        out.append((row, values[_EVENT_IDS_AT], values))
        was = expected.get(row.order_id)
        if was is not None:
            held[row.order_id] = was


def merged(a: Encoded, b: Encoded) -> Encoded:
    """Two encodings of distinct rows as one, in key order."""
    return Encoded(sorted(a.rows + b.rows, key=_first_order_id), {**a.held, **b.held})


def _first_order_id(entry: tuple[OrderRow, str, list[Any]]) -> str:
    return entry[0].order_id


async def write(
    conn: Any,
    table: str,
    rows: Sequence[OrderRow],
    expected: Mapping[str, str | None],
    cache: RowCache[OrderRow] | None = None,
) -> list[str]:
    """Write ``rows`` (sorted by order_id) in one statement; returns the order ids *not* written.

    ``expected[order_id]`` is the :func:`fingerprint` of the stored row the new
    row was folded from, or None for an order the table did not have. A row is
    written only if the table still matches; the others are returned, to be
    reloaded (locked) and folded again. Written rows go to ``cache`` with their
    fingerprint.
    """
    return await write_encoded(conn, table, encode(rows, expected), cache)


async def write_encoded(
    conn: Any, table: str, encoded: Encoded, cache: RowCache[OrderRow] | None = None,
    only: Collection[str] | None = None,
) -> list[str]:
    """:func:`write` of rows already encoded; ``only``: the order ids to cache (all if None)."""
    rows = encoded.rows
    if not rows:
        return []
    held = encoded.held
    written = await conn.fetchval(_write_sql(table), orjson.dumps([e[2] for e in rows]).decode(),
                                  orjson.dumps(held).decode(), list(held))
    done = set(written or ())
    lost = [] if len(done) == len(rows) else [e[0].order_id for e in rows if e[0].order_id not in done]
    if cache is not None:
        for row, fingerprint_, _ in rows:
            if (not lost or row.order_id in done) and (only is None or row.order_id in only):
                cache.put(table, row.order_id, fingerprint_, row)
    return lost
