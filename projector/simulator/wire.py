"""Encoding a fact as a producer would, and the Event the decoder must make of it. Pure.

Producers differ: some nest the payload under "data", some send RFC 3339
timestamps, some amounts as strings, some no Kafka key, a legacy one still
sends OrderPlaced v1, and the correlation id travels in the body, in a
header, in both (the body wins) or nowhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from projector.contracts.decoder import CORRELATION_HEADER
from projector.events import Event
from projector.simulator.lifecycle import Fact
from projector.simulator.options import SimulationOptions
from projector.simulator.population import Weighted

CURRENT_VERSION = {"OrderPlaced": 2}  # every other type is at v1
_OFFSETS = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)),
            timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=1)))

# Where the correlation id travels; "both" carries a stale header value.
_CORRELATION_ROUTES = Weighted([("body", 0.7), ("header", 0.15), ("both", 0.1), ("none", 0.05)])

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Encoded:
    key: bytes | None
    value: bytes
    headers: Headers
    event: Event  # what decoding (key, value, headers) must give
    body: dict[str, Any]  # the JSON object before serialisation (chaos edits a copy)
    nested: bool


@dataclass(frozen=True, slots=True)
class _Style:
    nested: bool
    iso: bool
    string_money: bool
    keyless: bool
    v1: bool
    nulls: bool  # absent optional fields sent as null rather than left out
    explicit_version: bool


def encode(fact: Fact, options: SimulationOptions, rng: random.Random) -> Encoded:
    """One producer's rendering of ``fact``; the draws from ``rng`` pick the style."""
    style = _Style(
        nested=rng.random() < options.nested,
        iso=rng.random() < options.iso_timestamps,
        string_money=rng.random() < options.string_money,
        keyless=rng.random() < options.keyless,
        v1=fact.event_type == "OrderPlaced"
        and fact.payload["currency"] == "USD"
        and rng.random() < options.v1_order_placed,
        nulls=rng.random() < 0.3,
        explicit_version=rng.random() < 0.5,
    )
    offset = rng.choice(_OFFSETS)
    correlation_route = _CORRELATION_ROUTES.draw(rng)

    payload, expected_payload = _payload(fact, style, offset)
    envelope: dict[str, Any] = {
        "event_id": fact.event_id,
        "event_type": fact.event_type,
        "timestamp": _time(fact.occurred_at, style.iso, offset),
    }
    version = 1 if style.v1 else CURRENT_VERSION.get(fact.event_type, 1)
    if style.explicit_version or version != 1:
        envelope["schema_version"] = version
    if correlation_route in ("body", "both"):
        envelope["correlation_id"] = fact.correlation_id
    if fact.causation_id is not None:
        envelope["causation_id"] = fact.causation_id
    envelope["producer"] = fact.producer + ("-legacy" if style.v1 else "")

    if style.nested:
        inner = dict(payload)
        if rng.random() < 0.5:  # order_id in the envelope only
            envelope["order_id"] = inner.pop("order_id")
        body = {**envelope, "data": inner}
    else:
        body = {**envelope, **payload}

    headers: Headers = ()
    if correlation_route == "header":
        headers = ((CORRELATION_HEADER, fact.correlation_id.encode()),)
    elif correlation_route == "both":  # a stale header value: the body must win
        headers = ((CORRELATION_HEADER, b"hdr-" + fact.correlation_id.encode()),)
    expected = Event(
        event_id=fact.event_id,
        event_type=fact.event_type,
        order_id=fact.order_id,
        occurred_at=fact.occurred_at,
        payload=expected_payload,
        schema_version=CURRENT_VERSION.get(fact.event_type, 1),
        correlation_id=None if correlation_route == "none" else fact.correlation_id,
        causation_id=fact.causation_id,
        producer=envelope["producer"],
    )
    return Encoded(
        key=None if style.keyless else fact.order_id.encode(),
        value=dumps(body),
        headers=headers,
        event=expected,
        body=body,
        nested=style.nested,
    )


def dumps(body: dict[str, Any]) -> bytes:
    """Serialise a body; Decimal becomes a JSON number with exactly its digits."""
    return orjson.dumps(body, default=_number)


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _time(at: datetime, iso: bool, offset: timezone) -> Any:
    if iso:
        return at.astimezone(offset).isoformat().replace("+00:00", "Z")
    return int(at.timestamp())


def _money(amount: Decimal, as_string: bool) -> Any:
    return str(amount) if as_string else amount


def _payload(fact: Fact, style: _Style, offset: timezone) -> tuple[dict[str, Any], dict[str, Any]]:
    """(wire payload, expected Event.payload)."""
    src = fact.payload
    expected = dict(src)
    if fact.event_type == "OrderPlaced" and style.v1:
        wire: dict[str, Any] = {
            "order_id": src["order_id"],
            "customer_id": src["customer_id"],
            "items": [{"sku": i["sku"], "quantity": i["qty"]} for i in src["items"]],
            "total": _money(src["total_amount"], style.string_money),
        }
        expected["items"] = tuple({"sku": i["sku"], "qty": i["qty"], "unit_price": None}
                                  for i in src["items"])
        return wire, expected
    wire = {}
    for name, value in src.items():
        if value is None:
            if style.nulls:
                wire[name] = None
        elif name == "items":
            wire[name] = [
                {"sku": i["sku"], "qty": i["qty"], "unit_price": _money(i["unit_price"], style.string_money)}
                for i in value
            ]
        elif isinstance(value, Decimal):
            wire[name] = _money(value, style.string_money)
        elif isinstance(value, datetime):
            wire[name] = _time(value, style.iso, offset)
        else:
            wire[name] = value
    return wire, expected
