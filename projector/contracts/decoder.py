"""Raw Kafka record -> :class:`Event` or :class:`Rejection`.

The steps, in the order a message can fail them:

1. the value parses as JSON (``invalid_json``) and is an object (``not_an_object``);
2. the envelope matches ``schemas/envelope.json`` (``schema_violation``);
3. ``event_type`` has a contract (``unknown_event_type``);
4. ``schema_version`` has a contract and an upcaster path to the current
   version (``unsupported_version``);
5. the payload matches that version's schema, and after upcasting, the
   current one (``schema_violation``);
6. a Kafka key, when present, equals ``order_id`` (``key_mismatch``);
7. money, timestamps and item lists are normalised (an impossible date such as
   February 30th is a ``schema_violation``).

The payload is either flat beside the envelope fields or nested under
``"data"``; ``order_id`` may sit in the envelope or in ``data`` (if in both,
they must agree). Never raises for bad input: every failure is a Rejection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from projector.contracts.normalise import (
    Builder,
    InexactNumber,
    NumberLiteral,
    payload_builder,
    to_datetime,
)
from projector.contracts.registry import SCHEMA_DIR, Catalogue, Validator, load_catalogue
from projector.contracts.upcasters import UPCASTERS, Upcaster
from projector.errors import ConfigError
from projector.events import Event, RejectReason, Rejection

CORRELATION_HEADER = "correlation_id"

_JsonError = fastjsonschema.JsonSchemaValueException


@dataclass(frozen=True, slots=True)
class _Route:
    """What decoding one (event type, version) needs, resolved once."""

    event_type: str
    version: int
    validate: Validator
    steps: tuple[Upcaster, ...]  # upcasters from `version` to current, in order
    validate_current: Validator | None  # re-check after upcasting; None when already current
    build: Builder  # current version's payload builder


class _Rejected(Exception):  # noqa: N818 -- control flow inside the decoder, never escapes
    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class Decoder:
    """Decodes wire messages against the contracts of one schema directory.

    Build it once: construction reads and compiles every schema (tens of ms).
    ``decode`` is then pure and thread-safe.
    """

    def __init__(self, catalogue: Catalogue | None = None, *, schema_dir: Path = SCHEMA_DIR) -> None:
        self.catalogue = catalogue if catalogue is not None else load_catalogue(schema_dir)
        self._envelope = self.catalogue.envelope
        self._routes: dict[tuple[str, int], _Route] = {}
        self._current = dict(self.catalogue.current)
        self.current_versions: Mapping[str, int] = self._current
        builders = {
            t: payload_builder(self.catalogue.contracts[(t, v)].fields) for t, v in self._current.items()
        }
        for (event_type, version), contract in self.catalogue.contracts.items():
            current = self._current[event_type]
            steps = []
            for v in range(version, current):
                step = UPCASTERS.get((event_type, v))
                if step is None:
                    raise ConfigError(
                        f"schemas/events/{event_type}.v{version}.json is not the current version "
                        f"(v{current}) but no upcaster {event_type} v{v} -> v{v + 1} is registered "
                        "in projector.contracts.upcasters."
                    )
                steps.append(step)
            self._routes[(event_type, version)] = _Route(
                event_type=event_type,
                version=version,
                validate=contract.validate,
                steps=tuple(steps),
                validate_current=None
                if version == current
                else self.catalogue.contracts[(event_type, current)].validate,
                build=builders[event_type],
            )

    def decode(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Event | Rejection:
        """Decode one Kafka record.

        ``value`` is the message value (None for a tombstone, rejected as
        invalid_json), ``key`` the message key (None or empty: no key, accepted),
        ``headers`` the record headers; a ``correlation_id`` header is used when
        the body has none.
        """
        if value is None:
            return Rejection(RejectReason.INVALID_JSON, "message has no value (a tombstone)", b"", key)
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejection(RejectReason.INVALID_JSON, f"not valid JSON: {exc}", value, key)
        try:
            return self._decode(obj, value, key, headers)
        except InexactNumber:
            # Rare: a number with 16+ significant digits; re-read keeping literals.
            try:
                exact = json.loads(value, parse_float=NumberLiteral)
            except ValueError as exc:
                return Rejection(RejectReason.INVALID_JSON, f"not valid JSON: {exc}", value, key)
            return self._decode(exact, value, key, headers)

    def _decode(
        self, obj: Any, raw: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Event | Rejection:
        if type(obj) is not dict:
            return Rejection(
                RejectReason.NOT_AN_OBJECT,
                f"expected a JSON object, got {_json_kind(obj)}",
                raw,
                key,
            )
        event_type = obj.get("event_type")
        known_type = event_type if type(event_type) is str else None
        try:
            return self._event(obj, key, headers)
        except _Rejected as rej:
            return Rejection(rej.reason, rej.detail, raw, key, known_type)

    def _event(
        self, obj: dict[str, Any], key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Event:
        try:
            self._envelope(obj)
        except _JsonError as exc:
            raise _Rejected(RejectReason.SCHEMA_VIOLATION, "envelope: " + _describe(exc, "")) from None
        event_type: str = obj["event_type"]
        version: int = obj.get("schema_version", 1)
        route = self._routes.get((event_type, version))
        if route is None:
            current = self._current.get(event_type)
            if current is None:
                raise _Rejected(
                    RejectReason.UNKNOWN_EVENT_TYPE,
                    f"unknown event_type {event_type!r}; known: {', '.join(sorted(self._current))}",
                )
            raise _Rejected(
                RejectReason.UNSUPPORTED_VERSION,
                f"{event_type} schema_version {version} is not supported "
                f"(current v{current}; known: "
                + ", ".join(f"v{v}" for t, v in sorted(self._routes) if t == event_type)
                + ")",
            )

        data = obj.get("data")
        if data is None:
            payload, where = obj, ""
        else:  # nested form; the envelope schema made sure `data` is an object
            payload, where = data, "data"
            envelope_order = obj.get("order_id")
            if envelope_order is not None:
                inner = data.get("order_id")
                if inner is None:
                    payload = {**data, "order_id": envelope_order}
                elif inner != envelope_order:
                    raise _Rejected(
                        RejectReason.SCHEMA_VIOLATION,
                        f"order_id {envelope_order!r} in the envelope differs from "
                        f"data.order_id {inner!r}",
                    )

        try:
            route.validate(payload)
        except _JsonError as exc:
            raise _Rejected(
                RejectReason.SCHEMA_VIOLATION, f"{event_type} v{version}: " + _describe(exc, where)
            ) from None
        if route.steps:
            for step in route.steps:
                payload = step(payload)
            assert route.validate_current is not None
            try:
                route.validate_current(payload)
            except _JsonError as exc:
                current = self._current[event_type]
                raise _Rejected(
                    RejectReason.SCHEMA_VIOLATION,
                    f"{event_type} v{version} upcast to v{current}: " + _describe(exc, where),
                ) from None

        order_id: str = payload["order_id"]
        if key and key != order_id.encode():
            raise _Rejected(
                RejectReason.KEY_MISMATCH,
                f"Kafka key {key.decode('utf-8', 'backslashreplace')!r} differs from "
                f"order_id {order_id!r}",
            )

        try:
            occurred_at = to_datetime(obj["timestamp"])
            body = route.build(payload)
        except InexactNumber:
            raise
        except (ValueError, OverflowError) as exc:  # February 30th, year 10000 after the offset
            raise _Rejected(RejectReason.SCHEMA_VIOLATION, f"{event_type}: {exc}") from None

        correlation_id = obj.get("correlation_id")
        if correlation_id is None and headers:
            correlation_id = _header(headers, CORRELATION_HEADER)
        return Event(
            event_id=obj["event_id"],
            event_type=event_type,
            order_id=order_id,
            occurred_at=occurred_at,
            payload=body,
            schema_version=self._current[event_type],
            correlation_id=correlation_id,
            causation_id=obj.get("causation_id"),
            producer=obj.get("producer"),
        )


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for header, value in headers:
        if header == name and value:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _describe(exc: _JsonError, where: str) -> str:
    """fastjsonschema names the root "data"; say "items[0].qty", or "data.items[0].qty" when nested."""
    message: str = exc.message
    if message.startswith("data"):
        rest = message[4:]
        if where:
            message = where + rest
        elif rest.startswith("."):
            message = rest[1:]
        else:
            message = "message" + rest
    if exc.rule not in ("required", "additionalProperties"):
        shown = repr(exc.value)
        message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return message


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


_default: Decoder | None = None


def default_decoder() -> Decoder:
    """The process-wide Decoder over the repository's schemas, built on first use."""
    global _default
    if _default is None:
        _default = Decoder()
    return _default


def decode(
    value: bytes | None,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> Event | Rejection:
    """Decode one Kafka record with :func:`default_decoder` (see :meth:`Decoder.decode`)."""
    return (_default or default_decoder()).decode(value, key, headers)

