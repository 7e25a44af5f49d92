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

Two paths give the same results. The fast path (:mod:`projector.contracts.fastpath`,
msgspec, ~2.5x faster) decodes the usual messages in one pass; it never
rejects, it hands anything unusual to the reference path below (orjson, the
compiled builders of :mod:`projector.contracts.compiler`, fastjsonschema to
explain a rejection), which decides and words every rejection.
``Decoder(fast=False)`` is the reference path alone.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from projector.contracts.compiler import Builder, Invalid
from projector.contracts.fastpath import FastPath
from projector.contracts.finishing import CORRELATION_HEADER, header
from projector.contracts.normalise import has_long_number, loads_exact
from projector.contracts.registry import SCHEMA_DIR, Catalogue, Validator, load_catalogue
from projector.contracts.upcasters import UPCASTERS, Upcaster
from projector.errors import ConfigError, InternalError
from projector.events import Event, Rejection, RejectReason

__all__ = ["CORRELATION_HEADER", "Decoder", "decode", "default_decoder"]

_JsonError = fastjsonschema.JsonSchemaValueException


@dataclass(frozen=True, slots=True)
class _Route:
    """What decoding one (event type, version) needs, resolved once."""

    event_type: str
    version: int
    current: int
    validate: Validator  # this version's reference validator (error messages, old versions)
    check: Builder  # this version's compiled builder, used to check old versions (output unused)
    steps: tuple[Upcaster, ...]  # upcasters from `version` to current, in order
    build: Builder  # the current version's check-and-normalise function
    validate_current: Validator  # the current version's reference validator
    name: str  # for messages: "OrderPlaced v1"
    label: str  # for messages about the result of build: "OrderPlaced v1 upcast to v2"


class _Rejected(Exception):  # control flow inside the decoder; never escapes decode()
    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class Decoder:
    """Decodes wire messages against the contracts of one schema directory.

    Build it once: construction reads and compiles every schema (tens of ms).
    ``decode`` is then pure and thread-safe.
    """

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        schema_dir: Path = SCHEMA_DIR,
        upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
        fast: bool = True,
    ) -> None:
        """``catalogue`` defaults to :func:`load_catalogue` over ``schema_dir``;
        ``upcasters`` to the ones registered in :mod:`projector.contracts.upcasters`;
        ``fast=False`` leaves out the fast path (the reference path alone, for tests).
        Raises ConfigError when a schema is malformed or a version cannot be upcast.
        """
        self.catalogue = catalogue if catalogue is not None else load_catalogue(schema_dir)
        #: event type -> current schema version
        self.current_versions: Mapping[str, int] = dict(self.catalogue.current)
        self._routes: dict[tuple[str, int], _Route] = {}
        for (event_type, version), contract in self.catalogue.contracts.items():
            current = self.current_versions[event_type]
            steps = []
            for v in range(version, current):
                step = upcasters.get((event_type, v))
                if step is None:
                    raise ConfigError(
                        f"schemas/events/{event_type}.v{version}.json is not the current version "
                        f"(v{current}) but no upcaster {event_type} v{v} -> v{v + 1} is registered "
                        "in projector.contracts.upcasters."
                    )
                steps.append(step)
            latest = self.catalogue.contracts[(event_type, current)]
            self._routes[(event_type, version)] = _Route(
                event_type=event_type,
                version=version,
                current=current,
                validate=contract.validate,
                check=contract.build,
                steps=tuple(steps),
                build=latest.build,
                validate_current=latest.validate,
                name=f"{event_type} v{version}",
                label=f"{event_type} v{version}"
                + (f" upcast to v{current}" if version != current else ""),
            )
        self._build_envelope = self.catalogue.build_envelope
        #: None with fast=False; its ``unsupported`` says which types it leaves to the reference path
        self.fast_path = FastPath(self.catalogue, upcasters) if fast else None
        self._fast = self.fast_path.decode if self.fast_path is not None else None

    def decode(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Event | Rejection:
        """Decode one Kafka record.

        ``value`` is the message value (None, a tombstone, is rejected as
        invalid_json), ``key`` the message key (None or empty: no key, accepted),
        ``headers`` the record headers; a ``correlation_id`` header is used when
        the body has none.
        """
        if value is None:
            return Rejection(RejectReason.INVALID_JSON, "message has no value (a tombstone)", b"", key)
        if self._fast is not None:
            event = self._fast(value, key, headers)
            if event is not None:
                return event
        return self.decode_reference(value, key, headers)

    def decode_reference(
        self,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Event | Rejection:
        """:meth:`decode` by the reference path alone (what the fast path falls back to)."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejection(RejectReason.INVALID_JSON, f"not valid JSON: {exc}", value, key)
        if type(obj) is not dict:
            return Rejection(
                RejectReason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_kind(obj)}", value, key
            )
        # Re-read keeping each number's literal text, so that money is exact (16+ digit
        # amounts too) and keeps its decimals (9.00 stays Decimal("9.00")), as on the fast path.
        try:
            obj = loads_exact(value)
        except (ValueError, RecursionError) as exc:  # orjson nests deeper
            if has_long_number(value):  # a 16+ digit number cannot be read exactly
                return Rejection(RejectReason.INVALID_JSON, f"not valid JSON: {exc}", value, key)
            # else keep orjson's floats: up to 15 digits, a float's repr is the literal's value
        try:
            return self._event(obj, key, headers)
        except _Rejected as rej:
            return _rejection(rej, obj, value, key)

    def _event(
        self, obj: dict[str, Any], key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Event:
        try:
            env = self._build_envelope(obj)
        except Invalid:
            raise _Rejected(
                RejectReason.SCHEMA_VIOLATION,
                "envelope: " + _explain(self.catalogue.envelope, obj, "", "envelope"),
            ) from None
        except (ValueError, OverflowError) as exc:  # a timestamp on February 30th
            raise _Rejected(RejectReason.SCHEMA_VIOLATION, f"envelope: timestamp: {exc}") from None
        event_type: str = env["event_type"]
        version: int = env["schema_version"] or 1
        route = self._routes.get((event_type, version))
        if route is None:
            raise self._no_route(event_type, version)

        data = env["data"]
        if data is None:
            payload, where = obj, ""
        else:  # nested form
            payload, where = data, "data"
            envelope_order = env["order_id"]
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

        if route.steps:  # an older version: check it as it is, then lift it
            try:
                route.check(payload)  # 3x faster than fastjsonschema, which then only explains
            except Invalid:
                detail = _explain(route.validate, payload, where, route.name)
                raise _Rejected(RejectReason.SCHEMA_VIOLATION, f"{route.name}: {detail}") from None
            except (ValueError, OverflowError):
                # A conversion (an impossible date) stopped the check: finish it with
                # fastjsonschema; converting is the current version's business.
                try:
                    route.validate(payload)
                except _JsonError as exc:
                    raise _Rejected(
                        RejectReason.SCHEMA_VIOLATION, f"{route.name}: {_describe(exc, where)}"
                    ) from None
            for step in route.steps:
                payload = step(payload)
        try:
            body = route.build(payload)
        except Invalid:
            detail = _explain(route.validate_current, payload, where, route.label)
            raise _Rejected(RejectReason.SCHEMA_VIOLATION, f"{route.label}: {detail}") from None
        except (ValueError, OverflowError) as exc:  # a well-formed but impossible date
            raise _Rejected(RejectReason.SCHEMA_VIOLATION, f"{route.label}: {exc}") from None

        order_id: str = body["order_id"]
        if key and key != order_id.encode():
            raise _Rejected(
                RejectReason.KEY_MISMATCH,
                f"Kafka key {key.decode('utf-8', 'backslashreplace')!r} differs from "
                f"order_id {order_id!r}",
            )
        correlation_id = env["correlation_id"]
        if correlation_id is None and headers:
            correlation_id = header(headers, CORRELATION_HEADER)
        return Event(
            env["event_id"],
            event_type,
            order_id,
            env["timestamp"],
            body,
            route.current,
            correlation_id,
            env["causation_id"],
            env["producer"],
        )

    def _no_route(self, event_type: str, version: int) -> _Rejected:
        current = self.current_versions.get(event_type)
        if current is None:
            return _Rejected(
                RejectReason.UNKNOWN_EVENT_TYPE,
                f"unknown event_type {event_type!r}; known: {', '.join(sorted(self.current_versions))}",
            )
        known = ", ".join(f"v{v}" for t, v in sorted(self._routes) if t == event_type)
        return _Rejected(
            RejectReason.UNSUPPORTED_VERSION,
            f"{event_type} schema_version {version} is not supported (known: {known}; current v{current})",
        )


def _rejection(rej: _Rejected, obj: dict[str, Any], raw: bytes, key: bytes | None) -> Rejection:
    event_type = obj.get("event_type")
    return Rejection(rej.reason, rej.detail, raw, key, event_type if type(event_type) is str else None)


def _explain(validate: Validator, value: Any, where: str, label: str) -> str:
    """Why the fast builder refused ``value``, in the reference validator's words."""
    try:
        validate(value)
    except _JsonError as exc:
        return _describe(exc, where)
    raise InternalError(
        f"the compiled builder for {label} refused a value that fastjsonschema accepts: "
        f"{value!r:.300}"
    )


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
        try:
            shown = repr(exc.value)
        except RecursionError:  # a value nested ~1,000 deep (orjson reads up to 1,024)
            shown = reprlib.repr(exc.value)
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

