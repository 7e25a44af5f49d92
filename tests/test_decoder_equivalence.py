"""The fast path (msgspec) decodes exactly as the reference path, or leaves the message to it.

``Decoder()`` tries the fast path first; ``Decoder(fast=False)`` is the
reference path alone (orjson, the compiled builders, fastjsonschema). For
hypothesis-generated messages, valid and not, the two must give equal results,
Decimals down to their exponent; and whatever the fast path accepts on its own
the reference must accept with the same Event.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projector.contracts import SCHEMA_DIR, Decoder
from projector.contracts.examples import load_examples
from projector.events import Event, Rejection
from projector.simulator import generate

FAST = Decoder()
REFERENCE = Decoder(fast=False)
assert FAST.fast_path is not None
FAST_PATH = FAST.fast_path

Headers = tuple[tuple[str, bytes], ...]


# --- writing JSON exactly as a test wants it ------------------------------------------


@dataclass(frozen=True)
class Lit:
    """A JSON number written as this literal text (``9.00``, ``1e400``, 30 digits...)."""

    text: str


@dataclass(frozen=True)
class Raw:
    """These bytes, as they are (invalid UTF-8, a deep nest...)."""

    data: bytes


@dataclass(frozen=True)
class Pairs:
    """An object written with these (key, value) pairs, duplicates included."""

    items: tuple[tuple[str, Any], ...]


def dumps(value: Any, *, ascii_only: bool = False, spaced: bool = False) -> bytes:
    colon, comma = (b": ", b", ") if spaced else (b":", b",")

    def write(v: Any) -> bytes:
        if isinstance(v, Lit):
            return v.text.encode()
        if isinstance(v, Raw):
            return v.data
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=ascii_only).encode()
        if isinstance(v, dict | Pairs):
            pairs = v.items if isinstance(v, Pairs) else v.items()
            return b"{" + comma.join(write(k) + colon + write(x) for k, x in pairs) + b"}"
        if isinstance(v, list | tuple):
            return b"[" + comma.join(write(x) for x in v) + b"]"
        return json.dumps(v).encode()  # None, bool, int

    return write(value)


# --- values -----------------------------------------------------------------------------


def _weird() -> st.SearchStrategy[Any]:
    """Values of the wrong type or shape for almost any field."""
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=5),
        st.sampled_from([[], {}, [1], {"a": 1}, Lit("1.5"), Lit("2.0"), Lit("-0"), Lit("1e999"),
                         Lit("1" * 320), Lit("-1e-400"), "", "x" * 201, Raw(b'"\xff"')]),
    )


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], n: int = 6) -> st.SearchStrategy[Any]:
    """``valid`` about n times in n + 1, else ``odd``: most messages stay valid, each field can break.

    (``st.one_of(valid, valid, ..., odd)`` would not do: one_of draws each distinct branch alike.)
    """
    return st.sampled_from([True] * n + [False]).flatmap(lambda ok: valid if ok else odd)


IDS = mostly(
    st.from_regex(r"\A[a-z]{1,8}-[0-9]{1,6}\Z"),
    st.one_of(st.text(min_size=1, max_size=12),
              st.sampled_from(["", "x" * 200, "x" * 201, "é" * 200, "\U0001f600" * 201, "a\u0000b"])),
    n=12,
)

_PLACES = st.from_regex(r"\A[0-9]{1,10}\Z")
VALID_MONEY = st.one_of(
    st.builds(lambda i, f: Lit(f"{i}.{f}"), st.integers(0, 10**6), _PLACES),  # 9.00, 0.10...
    st.builds(lambda i, f: f"{i}.{f}", st.integers(0, 10**6), _PLACES),  # "12.50"
    st.builds(lambda i: Lit(str(i)), st.integers(0, 10**6)),
    st.from_regex(r"\A[0-9]{1,20}(\.[0-9]{1,10})?\Z"),
)
ODD_MONEY = st.one_of(
    st.builds(lambda i: Lit(str(i)), st.integers(-5, 10**25)),
    st.builds(lambda i, f, e: Lit(f"{i}.{f}{e}"), st.integers(-10**6, 10**20), _PLACES,
              st.sampled_from(["", "e2", "E-2", "e+300", "e400", "e-400", "e-320"])),
    st.sampled_from([
        "9.00", "0.1", "0.10", "0", "0.0", "-0", "-0.0", "-0.01", "1e2", "1E+2", "1.5e-3", "15E-1", "0e5",
        "0.10000000000000001", "1234567890123456.78", "123456789012345678901234567890",
        "18446744073709551616",
        "1e300", "1e308", "1.7976931348623157e308", "1e309", "1e400", "1e-300", "1e-320", "1e-400", "-1e-400",
        "0.000000000000000000000000000000000000000001", "1" * 309, "1" * 310, "1" * 4301,
    ]).map(Lit),
    st.sampled_from(["12.50", "-1", "+1", "1e3", " 1", "1 ", "1_000", "12.", ".5", "0012", "1" * 21,
                     "1." + "0" * 11, "NaN", "Infinity", "١٢", "12.50\n", ""]),
)
MONEY = mostly(VALID_MONEY, st.one_of(ODD_MONEY, ODD_MONEY, _weird()), n=3)

TIMESTAMPS = mostly(
    st.one_of(
        st.integers(0, 253402300799),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)).map(
            lambda d: d.isoformat(timespec="seconds") + "Z"),
        st.builds(
            lambda d, frac, off: d.strftime("%Y-%m-%dT%H:%M:%S") + frac + off,
            st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
            st.sampled_from(["", ".5", ".123456", ".123456789"]),
            st.sampled_from(["Z", "+00:00", "+01:00", "-05:00", "+05:30"]),
        ),
    ),
    st.one_of(
        st.integers(-(2**64), 2**64),
        st.sampled_from([Lit("1732300000.0"), Lit("1.7323e9"), Lit("1732300000.5"), True,
                         "2024-02-30T10:00:00Z", "2024-11-22 18:26:40Z", "2024-11-22T18:26:40",
                         "2024-11-22T24:00:00Z", "2024-11-22T18:26:40.1234567890Z", "2024-11-22T18:26:40z",
                         "2024-11-22T18:26:40+0100", "2024-11-22T18:26:40+24:00", 253402300800, -1]),
    ),
)
QTY = mostly(st.integers(1, 100_000) | st.integers(1, 5),
             st.sampled_from([0, -1, 100_001, Lit("2.0"), Lit("1e2"), Lit("2.5"), "2", 2**64, True]))
CURRENCY = mostly(st.sampled_from(["USD", "EUR", "GBP"]) | st.from_regex(r"\A[A-Z]{3}\Z"),
                  st.sampled_from(["usd", "US", "USDD", "USD\n", "ÜSD", "", 840]))
TEXT = mostly(st.none() | st.text(max_size=8), st.sampled_from(["x" * 1000, "x" * 1001, 7]))


def maybe(strategy: st.SearchStrategy[Any], p_absent: float = 0.3) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), strategy) if p_absent else strategy


_ABSENT = object()


@st.composite
def items(draw: st.DrawFn, v1: bool) -> list[Any]:
    count = draw(st.sampled_from([1, 1, 2, 3, 0]))
    out = []
    for _ in range(count):
        item: dict[str, Any] = {"sku": draw(IDS), ("quantity" if v1 else "qty"): draw(QTY)}
        if not v1:
            price = draw(maybe(st.one_of(MONEY, st.none())))
            if price is not _ABSENT:
                item["unit_price"] = price
        out.append(item)
    return out


@st.composite
def order_placed(draw: st.DrawFn, order_id: str) -> tuple[dict[str, Any], int]:
    v1 = draw(st.integers(0, 4)) == 0
    if v1:
        return {"order_id": order_id, "customer_id": draw(IDS), "items": draw(items(True)),
                "total": draw(MONEY)}, 1
    return {"order_id": order_id, "customer_id": draw(IDS), "items": draw(items(False)),
            "total_amount": draw(MONEY), "currency": draw(CURRENCY)}, 2


def _example_payloads() -> dict[str, dict[str, Any]]:
    out = {}
    for example in load_examples():
        if example.expect is None and example.event_type != "OrderPlaced":
            body = json.loads(example.value)
            payload = body.get("data", {k: v for k, v in body.items() if k not in _ENVELOPE})
            out[example.event_type or ""] = payload
    return out


_ENVELOPE = ("event_id", "event_type", "timestamp", "schema_version", "correlation_id", "causation_id",
             "producer", "order_id", "data")
_EXAMPLES = _example_payloads()
_OTHER_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "reason": TEXT, "amount": st.one_of(MONEY, st.none()), "payment_id": TEXT, "carrier": TEXT,
    "tracking_number": TEXT, "eta": st.one_of(TIMESTAMPS, st.none()),
}


@st.composite
def other_event(draw: st.DrawFn, order_id: str) -> tuple[str, dict[str, Any]]:
    event_type = draw(st.sampled_from(sorted(_EXAMPLES)))
    payload = {**_EXAMPLES[event_type], "order_id": order_id}
    for name in [n for n in _OTHER_VALUES if draw(st.integers(0, 2)) == 0]:
        value = draw(maybe(_OTHER_VALUES[name], 0.2))
        if value is _ABSENT:
            payload.pop(name, None)
        else:
            payload[name] = value
    return event_type, payload


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bytes | None, Headers]:
    """A Kafka record, mostly valid, in every wire form; sometimes broken in one or two ways."""
    order_id = draw(mostly(st.from_regex(r"\Aorder-[0-9]{1,5}\Z"), IDS, n=3))
    if draw(st.booleans()):
        payload, version = draw(order_placed(order_id))
        event_type = "OrderPlaced"
    else:
        event_type, payload = draw(other_event(order_id))
        version = 1
    envelope: dict[str, Any] = {
        "event_id": draw(IDS), "event_type": event_type, "timestamp": draw(TIMESTAMPS)}
    schema_version = draw(mostly(st.sampled_from(["same", "absent"]),
                                 st.sampled_from([1, 2, 3, Lit("2.0"), "2", 0, None])))
    if schema_version == "same":
        envelope["schema_version"] = version
    elif schema_version == "absent":
        if version != 1:
            envelope["schema_version"] = version
    else:
        envelope["schema_version"] = schema_version
    for name in ("correlation_id", "causation_id", "producer"):
        value = draw(maybe(TEXT, 0.5))
        if value is not _ABSENT:
            envelope[name] = value

    form = draw(st.sampled_from(
        ["flat", "flat", "nested", "nested-envelope", "nested-both", "nested-differ"]))
    body: dict[str, Any]
    if form == "flat":
        body = {**envelope, **payload}
    else:
        data = dict(payload)
        if form == "nested-envelope":
            envelope["order_id"] = data.pop("order_id")
        elif form == "nested-both":
            envelope["order_id"] = data["order_id"]
        elif form == "nested-differ":
            envelope["order_id"] = data["order_id"] + "x"
        body = {**envelope, "data": data}

    # Breakage: a field dropped, a field of the wrong type, unknown fields (allowed).
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2]))):
        target = body
        if "data" in body and isinstance(body["data"], dict) and draw(st.booleans()):
            target = body["data"]
        name = draw(st.sampled_from(sorted(target) or ["event_id"]))
        if draw(st.booleans()):
            target.pop(name, None)
        else:
            target[name] = draw(_weird())
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(["shipping_notes", "x", "é", "data2", "qty"]))] = draw(st.one_of(
            _weird(), st.sampled_from([Lit("1e400"), Lit("-1e999"), Lit("1" * 310), Raw(b'"\xc3\x28"'),
                                       Raw(b'"\xed\xa0\x80"'), "\U0001f600", [[[[1]]]], {"n": Lit("1e5")}])))
    pairs: Any = body
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one counts
        name = draw(st.sampled_from(sorted(body)))
        pairs = Pairs((*body.items(), (name, draw(st.one_of(st.just(body[name]), _weird())))))
    value = dumps(pairs, ascii_only=draw(st.booleans()), spaced=draw(st.booleans()))

    key = draw(mostly(st.sampled_from([None, b"", order_id.encode()]), st.sampled_from([b"other", b"\xff"])))
    headers: Headers = draw(st.sampled_from([(), (("correlation_id", b"from-header"),),
                                             (("correlation_id", b"\xff"),), (("trace", b"t"),)]))
    return value, key, headers


# --- comparing results exactly ------------------------------------------------------------


def exact(value: Any) -> Any:
    """A form in which equal means identical: Decimal('9.00') differs from Decimal('9.0')."""
    if isinstance(value, Event):
        return ("Event", *(exact(getattr(value, f)) for f in Event.__slots__))
    if isinstance(value, Decimal):
        return ("Decimal", value.as_tuple())
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo)
    if isinstance(value, dict):
        return ("dict", tuple((k, exact(v)) for k, v in value.items()))  # key order too
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(exact(v) for v in value))
    return (type(value).__name__, value)


def check_equivalent(value: bytes, key: bytes | None, headers: Headers) -> Event | Rejection:
    reference = REFERENCE.decode(value, key, headers)
    fast_only = FAST_PATH.decode(value, key, headers)
    if fast_only is not None:  # the fast path decided alone: the reference must agree exactly
        assert isinstance(reference, Event), (value, reference)
        assert exact(fast_only) == exact(reference), (value, fast_only, reference)
    combined = FAST.decode(value, key, headers)
    assert type(combined) is type(reference)
    if isinstance(reference, Event):
        assert exact(combined) == exact(reference), (value, combined, reference)
    else:
        assert combined == reference, (value, combined, reference)
    return reference


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages())
def test_fast_path_agrees_with_the_reference(message: tuple[bytes, bytes | None, Headers]) -> None:
    check_equivalent(*message)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_path_agrees_on_byte_level_damage(data: st.DataObject) -> None:
    value, key, headers = data.draw(messages())
    # Cut, or replace one byte: mostly invalid JSON, sometimes a different valid message.
    at = data.draw(st.integers(0, max(len(value) - 1, 0)))
    if data.draw(st.booleans()):
        value = value[:at]
    else:
        value = value[:at] + bytes([data.draw(st.integers(0, 255))]) + value[at + 1:]
    check_equivalent(value, key, headers)


_R = b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":'
_EDGES: list[bytes] = [
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":1e999}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":"\xff"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","\xff":1}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":"\xed\xa0\x80"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":"\\ud800"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":"\\ud83d\\ude00"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o\\u0000"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"\\u006frder_id":"o"}',
    b'{"event_id":"e","event_type":"OrderDelivered","event_type":"OrderShipped","timestamp":1,"order_id":"o"}',
    b'{"event_id":"e","event_type":"OrderShipped","event_type":"OrderDelivered","timestamp":1,"order_id":"o"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","order_id":"p"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","data":null}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"data":{"order_id":"o","x":1e999}}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o"} ',
    b'\xef\xbb\xbf{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o"}x',
    b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":1e308}',
    b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":1.8e308}',
    b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":-0.0}',
    b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":-1e-400}',
    b'{"event_id":"e","event_type":"PaymentRefunded","timestamp":1,"order_id":"o","amount":1e-400}',
    _R + b"9" * 400 + b"}",
    _R + b'"1' + b"0" * 20 + b'"}',
    b'{"event_id":"e","event_type":"ShippingScheduled","timestamp":1,"order_id":"o","eta":"2024-02-29T00:00:00Z"}',
    b'{"event_id":"e","event_type":"ShippingScheduled","timestamp":1,"order_id":"o","eta":"2023-02-29T00:00:00Z"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":253402300799,"order_id":"o"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":"9999-12-31T23:59:59-01:00","order_id":"o"}',
    b'{"event_id":"e","event_type":"OrderDelivered","timestamp":"0001-01-01T00:00:00+01:00","order_id":"o"}',
    *(b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","x":'
      + b"[" * depth + b"]" * depth + b"}" for depth in (900, 1000, 1023, 1024, 1030)),
    *(_R + b"[" * depth + b"]" * depth + b"}" for depth in (900, 1000, 1030)),
]


@pytest.mark.parametrize("value", _EDGES, ids=range(len(_EDGES)))
def test_fast_path_agrees_on_json_edge_cases(value: bytes) -> None:
    check_equivalent(value, None, ())


def test_every_contract_has_a_fast_route() -> None:
    assert FAST_PATH.unsupported == {}
    assert set(FAST_PATH.routes) == set(FAST.catalogue.contracts)


def test_fast_path_takes_the_usual_traffic() -> None:
    # The simulator's producer variety: both forms, both timestamp forms, string money,
    # keyless records, legacy OrderPlaced v1 (upcast), correlation ids in headers.
    valid = 0
    for record in generate(orders=300, seed=9):
        result = check_equivalent(record.value, record.key, record.headers)
        if isinstance(result, Event):
            valid += 1
            assert FAST_PATH.decode(record.value, record.key, record.headers) is not None, record
    assert valid > 1000


def test_money_keeps_its_literal_on_both_paths() -> None:
    value = (b'{"event_id":"e","event_type":"OrderPlaced","schema_version":2,"timestamp":1,"order_id":"o",'
             b'"customer_id":"c","items":[{"sku":"A","qty":1,"unit_price":9.00}],"total_amount":1E+1,'
             b'"currency":"USD"}')
    for decoder in (FAST, REFERENCE):
        event = decoder.decode(value)
        assert isinstance(event, Event)
        assert str(event.payload["items"][0]["unit_price"]) == "9.00"
        assert str(event.payload["total_amount"]) == "1E+1"
    assert FAST_PATH.decode(value, None, ()) is not None


def test_unknown_fields_stay_on_the_fast_path() -> None:
    value = (b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o",'
             b'"courier":{"name":"Ann","rating":4.5},"tags":["a"]}')
    assert FAST_PATH.decode(value, None, ()) is not None
    check_equivalent(value, None, ())


def test_a_contract_the_fast_path_cannot_translate_is_left_to_the_reference(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    path = schemas / "events/OrderDelivered.v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["weight_kg"] = {"type": "number", "minimum": 0}  # a float, not money
    path.write_text(json.dumps(schema))
    fast, reference = Decoder(schema_dir=schemas), Decoder(schema_dir=schemas, fast=False)
    assert fast.fast_path is not None
    assert set(fast.fast_path.unsupported) == {("OrderDelivered", 1)}
    assert "weight_kg" in fast.fast_path.unsupported[("OrderDelivered", 1)]
    value = b'{"event_id":"e","event_type":"OrderDelivered","timestamp":1,"order_id":"o","weight_kg":1.5}'
    assert fast.fast_path.decode(value, None, ()) is None
    result = fast.decode(value)
    assert isinstance(result, Event) and result == reference.decode(value)
    assert result.payload["weight_kg"] == 1.5 and type(result.payload["weight_kg"]) is float
    # The other types keep their fast route.
    other = (b'{"event_id":"e","event_type":"OrderShipped","timestamp":1,"order_id":"o",'
             b'"tracking_number":"t","carrier":"c"}')
    assert fast.fast_path.decode(other, None, ()) is not None


_REPLACEMENTS: list[Any] = [
    _ABSENT, None, True, 0, -1, 1, 2**64, Lit("2.0"), Lit("-0.5"), Lit("-0.0"), Lit("-1e-400"), Lit("1e400"),
    Lit("0.50"), Lit("1E+2"), "", "x", "-1", "1e3", "12.50", "USD", "usd", "2024-11-22T18:26:40Z",
    "2024-02-30T00:00:00Z", "x" * 1001, [], [{}], {}, {"sku": "A", "qty": 1},
]


def _single_changes() -> list[tuple[str, bytes]]:
    """Every valid example, flat and nested, with one field at a time replaced (or dropped)."""
    cases = []
    for example in load_examples():
        if example.expect is not None:
            continue
        body = json.loads(example.value)
        data = body.pop("data", None)
        flat = {**body, **(data or {})}
        nested = {k: v for k, v in flat.items() if k in _ENVELOPE}
        nested["data"] = {k: v for k, v in flat.items() if k not in _ENVELOPE or k == "order_id"}
        for form, message in (("flat", flat), ("nested", nested)):
            targets: list[tuple[str, dict[str, Any]]] = [("", message)]
            if form == "nested":
                targets.append(("data.", message["data"]))
            items = message.get("items") or message.get("data", {}).get("items")
            if items:
                targets.append(("items[0].", items[0]))
            for prefix, target in targets:
                for name in [*sorted(target), "unit_price"]:
                    for i, replacement in enumerate(_REPLACEMENTS):
                        saved = target.get(name, _ABSENT)
                        if replacement is _ABSENT:
                            target.pop(name, None)
                        else:
                            target[name] = replacement
                        cases.append((f"{example.name}.{form}.{prefix}{name}.{i}", dumps(message)))
                        if saved is _ABSENT:
                            target.pop(name, None)
                        else:
                            target[name] = saved
    return cases


def test_fast_path_agrees_on_every_single_field_change() -> None:
    cases = _single_changes()
    assert len(cases) > 5000
    accepted = 0
    for _name, value in cases:
        accepted += isinstance(check_equivalent(value, None, ()), Event)
    assert accepted > 500  # both verdicts are well represented
