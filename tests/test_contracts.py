"""The decoder: both wire forms, both timestamp forms, money exactness, every rejection."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projector.contracts import SCHEMA_DIR, Decoder, decode, default_decoder
from projector.contracts.compiler import Invalid
from projector.contracts.examples import load_examples
from projector.errors import ConfigError
from projector.events import Event, Rejection, RejectReason

REFERENCE = Decoder(fast=False)  # the path the fast one falls back to
T0 = 1732300000  # 2024-11-22T18:26:40Z
AT0 = datetime(2024, 11, 22, 18, 26, 40, tzinfo=UTC)


def placed(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "order-placed-order-1001",
        "event_type": "OrderPlaced",
        "schema_version": 2,
        "timestamp": T0,
        "order_id": "order-1001",
        "customer_id": "cust-00042",
        "items": [{"sku": "SKU-1", "qty": 2, "unit_price": 19.99}, {"sku": "SKU-2", "qty": 1}],
        "total_amount": 39.98,
        "currency": "USD",
    }
    body.update(changes)
    return body


def raw(body: Any) -> bytes:
    return orjson.dumps(body)


def event(value: bytes, key: bytes | None = None, headers: tuple[tuple[str, bytes], ...] = ()) -> Event:
    result = decode(value, key, headers)
    assert isinstance(result, Event), result
    return result


def rejection(value: bytes | None, key: bytes | None = None) -> Rejection:
    result = decode(value, key)
    assert isinstance(result, Rejection), result
    return result


# --- accepted forms ---------------------------------------------------------------


def test_flat_order_placed() -> None:
    ev = event(raw(placed(correlation_id="c-1", causation_id="x", producer="order-service")))
    assert ev.event_id == "order-placed-order-1001"
    assert ev.event_type == "OrderPlaced"
    assert ev.order_id == "order-1001"
    assert ev.occurred_at == AT0 and ev.occurred_at.tzinfo is UTC
    assert ev.schema_version == 2
    assert (ev.correlation_id, ev.causation_id, ev.producer) == ("c-1", "x", "order-service")
    assert ev.payload == {
        "order_id": "order-1001",
        "customer_id": "cust-00042",
        "items": (
            {"sku": "SKU-1", "qty": 2, "unit_price": Decimal("19.99")},
            {"sku": "SKU-2", "qty": 1, "unit_price": None},
        ),
        "total_amount": Decimal("39.98"),
        "currency": "USD",
    }
    assert isinstance(ev.payload["items"], tuple)


def test_integral_float_quantities_become_ints() -> None:
    ev = event(raw(placed(items=[{"sku": "A", "qty": 2.0, "unit_price": 1}], schema_version=2.0)))
    qty = ev.payload["items"][0]["qty"]
    assert qty == 2 and type(qty) is int
    assert type(ev.schema_version) is int


def test_payload_excludes_envelope_and_unknown_fields() -> None:
    ev = event(raw(placed(correlation_id="c", shipping_notes="leave at door")))
    assert set(ev.payload) == {"order_id", "customer_id", "items", "total_amount", "currency"}


@pytest.mark.parametrize("where", ["data", "envelope", "both"])
def test_nested_form_equals_flat_form(where: str) -> None:
    flat = placed()
    envelope = {k: flat[k] for k in ("event_id", "event_type", "schema_version", "timestamp")}
    data = {k: v for k, v in flat.items() if k not in envelope}
    if where == "envelope":
        envelope["order_id"] = data.pop("order_id")
    elif where == "both":
        envelope["order_id"] = data["order_id"]
    assert event(raw({**envelope, "data": data})) == event(raw(flat))


def test_nested_form_with_conflicting_order_ids_is_rejected() -> None:
    body = {"event_id": "e", "event_type": "OrderDelivered", "timestamp": T0,
            "order_id": "order-1", "data": {"order_id": "order-2"}}
    rej = rejection(raw(body))
    assert rej.reason is RejectReason.SCHEMA_VIOLATION
    assert "order-1" in rej.detail and "order-2" in rej.detail


@pytest.mark.parametrize("timestamp", [
    T0,
    float(T0),  # an integral number is an integer in JSON Schema
    "2024-11-22T18:26:40Z",
    "2024-11-22T18:26:40+00:00",
    "2024-11-22T19:26:40+01:00",
    "2024-11-22T13:26:40-05:00",
    "2024-11-22T18:26:40.000000Z",
])
def test_timestamp_forms_normalise_to_the_same_utc_instant(timestamp: Any) -> None:
    ev = event(raw(placed(timestamp=timestamp)))
    assert ev.occurred_at == AT0
    assert ev.occurred_at.utcoffset() == timedelta(0)


def test_fractional_iso_seconds_are_kept() -> None:
    ev = event(raw(placed(timestamp="2024-11-22T18:26:40.250+00:00")))
    assert ev.occurred_at == AT0.replace(microsecond=250_000)


def test_eta_is_a_utc_datetime() -> None:
    body = {"event_id": "s", "event_type": "ShippingScheduled", "timestamp": T0,
            "order_id": "o", "carrier": "DHL", "eta": "2024-11-25T12:00:00+01:00"}
    assert event(raw(body)).payload == {
        "order_id": "o", "carrier": "DHL", "eta": datetime(2024, 11, 25, 11, 0, tzinfo=UTC)}


def test_absent_and_null_optional_fields_are_none() -> None:
    base = {"event_id": "p", "event_type": "PaymentSucceeded", "timestamp": T0, "order_id": "o"}
    assert event(raw(base)).payload == {"order_id": "o", "amount": None, "payment_id": None}
    nulls = {**base, "amount": None, "payment_id": None, "correlation_id": None}
    assert event(raw(nulls)) == event(raw(base))


# --- headers and keys -------------------------------------------------------------


def test_correlation_id_from_header_when_body_has_none() -> None:
    ev = event(raw(placed()), headers=(("trace", b"t"), ("correlation_id", b"from-header")))
    assert ev.correlation_id == "from-header"


def test_body_correlation_id_wins_over_header() -> None:
    ev = event(raw(placed(correlation_id="from-body")), headers=(("correlation_id", b"from-header"),))
    assert ev.correlation_id == "from-body"


def test_undecodable_correlation_header_is_ignored() -> None:
    assert event(raw(placed()), headers=(("correlation_id", b"\xff\xfe"),)).correlation_id is None


@pytest.mark.parametrize("key", [None, b"", b"order-1001"])
def test_absent_empty_or_matching_key_is_accepted(key: bytes | None) -> None:
    assert event(raw(placed()), key).order_id == "order-1001"


@pytest.mark.parametrize("key", [b"order-1002", b"\xff\xfe", b"order-1001 "])
def test_key_that_differs_from_order_id_is_rejected(key: bytes) -> None:
    rej = rejection(raw(placed()), key)
    assert rej.reason is RejectReason.KEY_MISMATCH
    assert rej.key == key
    assert rej.event_type == "OrderPlaced"
    assert "order-1001" in rej.detail


# --- upcasting --------------------------------------------------------------------


def test_order_placed_v1_is_upcast_to_v2() -> None:
    v1 = {"event_id": "order-placed-order-7", "event_type": "OrderPlaced", "schema_version": 1,
          "timestamp": T0, "order_id": "order-7", "customer_id": "c",
          "items": [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 1}], "total": "30.00"}
    ev = event(raw(v1), b"order-7")
    assert ev.schema_version == 2
    assert ev.payload == {
        "order_id": "order-7",
        "customer_id": "c",
        "items": ({"sku": "A", "qty": 3, "unit_price": None}, {"sku": "B", "qty": 1, "unit_price": None}),
        "total_amount": Decimal("30.00"),
        "currency": "USD",
    }
    # Without schema_version an event is v1.
    del v1["schema_version"]
    assert event(raw(v1)) == ev


def test_v1_shape_errors_are_reported_against_v1() -> None:
    v1 = {"event_id": "e", "event_type": "OrderPlaced", "schema_version": 1, "timestamp": T0,
          "order_id": "o", "customer_id": "c", "items": [{"sku": "A", "quantity": 0}], "total": 1}
    rej = rejection(raw(v1))
    assert rej.reason is RejectReason.SCHEMA_VIOLATION
    assert rej.detail.startswith("OrderPlaced v1:") and "items[0].quantity" in rej.detail


# --- money ------------------------------------------------------------------------


def test_money_is_exact_decimal() -> None:
    items = [{"sku": "A", "qty": 1, "unit_price": 0.1}, {"sku": "B", "qty": 1, "unit_price": 0.2}]
    body = placed(items=items, total_amount=0.3)
    payload = event(raw(body)).payload
    prices = [i["unit_price"] for i in payload["items"]]
    assert prices == [Decimal("0.1"), Decimal("0.2")]
    assert all(type(p) is Decimal for p in prices)
    assert str(prices[0]) == "0.1"
    assert prices[0] + prices[1] == Decimal("0.3") == payload["total_amount"]


@pytest.mark.parametrize(("literal", "expected"), [
    (b"0.1", "0.1"),
    (b"12.50", "12.50"),  # the producer's decimals are kept, as for the string form
    (b'"12.50"', "12.50"),
    (b"7", "7"),
    (b"1e2", "1E+2"),
    (b"123456789012.34", "123456789012.34"),
    (b"0.10000000000000001", "0.10000000000000001"),  # 17 digits: a float would say 0.1
    (b"1234567890123456789.01", "1234567890123456789.01"),
    (b"123456789012345678901234567890", "123456789012345678901234567890"),  # > 64 bits
    (b"18446744073709551615", "18446744073709551615"),
    (b"12345678.123456789", "12345678.123456789"),
    (b"1234567890123456e2", "1.234567890123456E+17"),
])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_money_literals_keep_their_exact_value(literal: bytes, expected: str, fast: bool) -> None:
    value = (b'{"event_id":"r","event_type":"PaymentRefunded","timestamp":1732300000,'
             b'"order_id":"o","amount":' + literal + b"}")
    result = (default_decoder() if fast else REFERENCE).decode(value)
    assert isinstance(result, Event), result
    amount = result.payload["amount"]
    assert type(amount) is Decimal
    assert str(amount) == expected


# --- rejections -------------------------------------------------------------------


def test_long_digit_runs_in_strings_only_cost_the_exact_path() -> None:
    body = placed(customer_id="cust-12345678901234567890", total_amount=0.3)
    ev = event(raw(body))
    assert ev.payload["total_amount"] == Decimal("0.3")
    assert ev.payload["items"][0]["unit_price"] == Decimal("19.99")


def test_tombstone_is_invalid_json() -> None:
    rej = rejection(None, b"order-1")
    assert rej.reason is RejectReason.INVALID_JSON and rej.raw == b"" and rej.key == b"order-1"


@pytest.mark.parametrize("value", [b"", b"{", b"{'a': 1}", b'{"a": NaN}', b"\xff\xfe{}", b'{"a": 1e999}'])
def test_invalid_json(value: bytes) -> None:
    rej = rejection(value, b"k")
    assert rej.reason is RejectReason.INVALID_JSON
    assert rej.raw == value and rej.key == b"k" and rej.event_type is None


@pytest.mark.parametrize("value", [b"[]", b"[{}]", b'"OrderPlaced"', b"42", b"null", b"true"])
def test_not_an_object(value: bytes) -> None:
    rej = rejection(value)
    assert rej.reason is RejectReason.NOT_AN_OBJECT and rej.raw == value


@pytest.mark.parametrize(("body", "fragment"), [
    ({k: v for k, v in placed().items() if k != "event_id"}, "event_id"),
    (placed(event_id=""), "event_id"),
    (placed(event_type=7), "event_type"),
    (placed(timestamp=T0 * 1000), "timestamp"),
    (placed(timestamp=-1), "timestamp"),
    (placed(timestamp="2024-11-22 18:26:40"), "timestamp"),
    (placed(timestamp="2024-11-22T18:26:40"), "timestamp"),
    (placed(timestamp="2024-02-30T10:00:00Z"), "day is out of range"),
    (placed(timestamp=True), "timestamp"),
    (placed(schema_version=0), "schema_version"),
    (placed(schema_version="2"), "schema_version"),
    (placed(data="x"), "data"),
    (placed(total_amount=-0.01), "total_amount"),
    (placed(total_amount="-1"), "total_amount"),
    (placed(total_amount="1,50"), "total_amount"),
    (placed(total_amount=None), "total_amount"),
    (placed(items=[]), "items"),
    (placed(items=[{"sku": "A", "qty": 0}]), "items[0].qty"),
    (placed(items=[{"sku": "A", "qty": 2.5}]), "items[0].qty"),
    (placed(items=[{"sku": "A", "qty": "2"}]), "items[0].qty"),
    (placed(items=[{"sku": "A", "qty": 1}, {"qty": 1}]), "items[1]"),
    (placed(items=[{"sku": "A", "qty": 1, "unit_price": -1}]), "items[0].unit_price"),
    (placed(currency="usd"), "currency"),
    (placed(currency="US"), "currency"),
    (placed(currency="USD\n"), "currency"),
    (placed(order_id=1001), "order_id"),
])
def test_schema_violation(body: dict[str, Any], fragment: str) -> None:
    rej = rejection(raw(body))
    assert rej.reason is RejectReason.SCHEMA_VIOLATION
    assert fragment in rej.detail, rej.detail


def test_schema_violation_detail_names_the_field_and_value() -> None:
    rej = rejection(raw(placed(items=[{"sku": "A", "qty": 0}])))
    assert rej.detail == "OrderPlaced v2: items[0].qty must be bigger than or equal to 1 (got 0)"
    assert rej.event_type == "OrderPlaced"


@pytest.mark.parametrize("version", [3, 99])
def test_newer_version_is_unsupported(version: int) -> None:
    rej = rejection(raw(placed(schema_version=version)))
    assert rej.reason is RejectReason.UNSUPPORTED_VERSION
    assert rej.event_type == "OrderPlaced" and str(version) in rej.detail


def test_version_without_contract_is_unsupported() -> None:
    body = {"event_id": "p", "event_type": "PaymentSucceeded", "schema_version": 2,
            "timestamp": T0, "order_id": "o"}
    assert rejection(raw(body)).reason is RejectReason.UNSUPPORTED_VERSION


def test_unknown_event_type() -> None:
    rej = rejection(raw(placed(event_type="OrderTeleported")))
    assert rej.reason is RejectReason.UNKNOWN_EVENT_TYPE
    assert rej.event_type == "OrderTeleported"
    assert "OrderTeleported" in rej.detail


def test_routing_ignores_the_topic_name() -> None:
    # decode() has no topic parameter at all: the event type alone selects the contract.
    ev = event(raw({"event_id": "d", "event_type": "OrderDelivered", "timestamp": T0, "order_id": "o"}))
    assert ev.event_type == "OrderDelivered"


# --- start-up checks --------------------------------------------------------------


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def test_old_version_without_upcaster_refuses_to_start(schema_copy: Path) -> None:
    shutil.copy(schema_copy / "events/PaymentFailed.v1.json", schema_copy / "events/PaymentFailed.v2.json")
    with pytest.raises(ConfigError, match="no upcaster PaymentFailed v1 -> v2"):
        Decoder(schema_dir=schema_copy)


def test_unsupported_keyword_refuses_to_start(schema_copy: Path) -> None:
    path = schema_copy / "events/OrderDelivered.v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["order_id"]["enum"] = ["a", "b"]
    path.write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="enum"):
        Decoder(schema_dir=schema_copy)


def test_missing_schema_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        Decoder(schema_dir=tmp_path)


# --- the compiled builders agree with fastjsonschema ------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 100_000, 100_001, 253402300799, 253402300800, 1.0, 1.5, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "USD", "usd", "EURO", "12.50", "-1", "1e3", "1.", ".5", "0012", "USD\n",
                     "2024-11-22T18:26:40Z", "2024-11-22T18:26:40", "2024-02-30T00:00:00Z",
                     "2024-11-22T18:26:40.1234567890Z", "x" * 201, "y" * 1001]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def _bases() -> list[dict[str, Any]]:
    out = []
    for example in load_examples():
        if example.expect is None:
            body = json.loads(example.value)
            out.append(body.get("data", body) | {"order_id": body.get("order_id", "o")})
    return out


@st.composite
def _mutants(draw: st.DrawFn) -> dict[str, Any]:
    value: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(_bases())))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        target: Any = value
        items = value.get("items")
        if isinstance(items, list) and items and draw(st.booleans()):
            target = items[draw(st.integers(min_value=0, max_value=len(items) - 1))]
            if not isinstance(target, dict):
                continue
        key = draw(st.sampled_from([*sorted(target), "extra", "qty", "quantity"]))
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(_JSON)
    return value


def _fast_accepts(build: Any, value: Any) -> bool:
    try:
        build(value)
    except Invalid:
        return False
    except (ValueError, OverflowError):
        return True  # passed the checks; only the conversion afterwards objected
    return True


def _reference_accepts(validate: Any, value: Any) -> bool:
    try:
        validate(value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


_CONTRACTS = sorted(default_decoder().catalogue.contracts)


@pytest.mark.parametrize("contract", _CONTRACTS, ids=lambda c: f"{c[0]}.v{c[1]}")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_mutants())
def test_compiled_builder_agrees_with_fastjsonschema(contract: tuple[str, int], value: Any) -> None:
    c = default_decoder().catalogue.contracts[contract]
    assert _fast_accepts(c.build, value) == _reference_accepts(c.validate, value), value


@settings(max_examples=500, deadline=None)
@given(value=st.dictionaries(
    st.sampled_from(["event_id", "event_type", "timestamp", "schema_version", "correlation_id",
                     "causation_id", "producer", "order_id", "data", "other"]),
    _JSON, max_size=9))
def test_compiled_envelope_agrees_with_fastjsonschema(value: dict[str, Any]) -> None:
    catalogue = default_decoder().catalogue
    assert _fast_accepts(catalogue.build_envelope, value) == _reference_accepts(catalogue.envelope, value)
