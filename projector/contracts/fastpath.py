"""The fast path of the decoder: msgspec Structs, decoded in one pass.

At start-up, for every event type and schema version, this module builds from
the same inlined schemas as the reference path:

* one msgspec Struct tagged with the ``event_type``, holding the envelope and
  the payload fields, with ``data`` as a nested Struct, so that either wire
  form decodes in one pass (:mod:`projector.contracts.structs`);
* one finishing function (:mod:`projector.contracts.finishing`) that checks
  what msgspec could not and makes the :class:`~projector.events.Event` as
  the reference path does. An older version is checked as it is, then lifted
  to the current one by the reference path's own upcasters and builder, on
  the message re-read with exact numbers (:func:`_lifter`).

:meth:`FastPath.decode` returns None whenever it is not sure (any msgspec
error, a check that fails, a contract it could not translate): the reference
path then decides and explains. So the fast path never rejects, and it may
accept only what the reference accepts, with the same Event; the test suite
checks this with hypothesis (``tests/test_decoder_equivalence.py``).

A tagged union holds one Struct per tag, so there is one union per age: the
current versions, then each type's previous version, and so on. And each
union exists twice:

1. strict, refusing unknown fields. Then msgspec skips nothing: every number
   and string is read into a typed field, where msgspec refuses what orjson
   (the reference parser) refuses: invalid UTF-8, numbers out of range (money,
   read as a Decimal, is bounded by the finishing code);
2. lenient, when the only problem may be an unknown field (they are allowed),
   once ``orjson.loads`` has accepted the whole value: msgspec checks neither
   the UTF-8 nor the range of the numbers it skips.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec
import orjson

from projector.contracts.checks import FALLBACK, Fallback
from projector.contracts.compiler import Builder, Invalid
from projector.contracts.finishing import Finisher, Lifter, finisher
from projector.contracts.normalise import loads_exact
from projector.contracts.registry import Catalogue
from projector.contracts.structs import Field, Node, Object, Scalar, Unsupported, struct, translate
from projector.contracts.upcasters import Upcaster
from projector.events import Event

# The envelope properties the decoder itself interprets (as the reference path does).
_TAG, _VERSION, _DATA, _ORDER_ID = "event_type", "schema_version", "data", "order_id"
_EVENT_FIELDS = ("event_id", "timestamp", "correlation_id", "causation_id", "producer")
_UNKNOWN_FIELD = "Object contains unknown field"  # msgspec's wording; if it changes, step 2 is skipped
_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "deprecated"})


@dataclass(frozen=True, slots=True)
class Route:
    """What the fast path made of one event type at one schema version."""

    event_type: str
    version: int
    strict: type[msgspec.Struct]
    lenient: type[msgspec.Struct]
    finish: Finisher  # (decoded Struct, raw value, Kafka key, headers) -> Event; raises Fallback


class FastPath:
    """Decodes the usual messages of every event type; None means "ask the reference path".

    Built once from a ``catalogue`` (tens of ms); ``upcasters`` lift older
    versions, as in the reference path. ``decode`` is then pure and thread-safe
    (its memos only ever gain checked values).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        upcasters: Mapping[tuple[str, int], Upcaster],
    ) -> None:
        #: (event type, version) -> its fast route
        self.routes: dict[tuple[str, int], Route] = {}
        #: (event type, version) -> why it has no fast route (the reference path decodes it)
        self.unsupported: dict[tuple[str, int], str] = {}
        try:
            envelope = _envelope(catalogue.envelope_schema)
        except Unsupported as exc:
            self.unsupported = {k: f"envelope.json: {exc}" for k in catalogue.contracts}
        else:
            for (event_type, version), contract in sorted(catalogue.contracts.items()):
                current = catalogue.current[event_type]
                lift = None
                if version != current:
                    steps = [upcasters[(event_type, v)] for v in range(version, current)]
                    lift = _lifter(steps, catalogue.contracts[(event_type, current)].build)
                try:
                    self.routes[(event_type, version)] = build_route(
                        event_type, version, current, envelope, contract.schema, lift)
                except Unsupported as exc:
                    self.unsupported[(event_type, version)] = str(exc)
        finishers: dict[type, Finisher] = {_Placeholder: _fall_back}
        for route in self.routes.values():
            finishers[route.strict] = finishers[route.lenient] = route.finish
        self._finishers = finishers
        # A tagged union holds one Struct per tag (event type), so one union per age:
        # the current versions first, then each type's previous one, and so on.
        stages: dict[int, list[Route]] = {}
        for (event_type, version), route in self.routes.items():
            stages.setdefault(catalogue.current[event_type] - version, []).append(route)
        ordered = [stages[age] for age in sorted(stages)]
        self._strict = [_decoder([r.strict for r in stage]) for stage in ordered]
        self._lenient = [_decoder([r.lenient for r in stage]) for stage in ordered]

    def decode(
        self, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Event | None:
        """The Event of a Kafka record, or None when the reference path must decide."""
        if not self._strict:  # no contract could be translated
            return None
        try:
            msg = self._strict[0].decode(value)
        except msgspec.ValidationError as exc:
            msg = self._retry(value, str(exc).startswith(_UNKNOWN_FIELD))
            if msg is None:
                return None
        except (ValueError, RecursionError):  # malformed JSON, invalid UTF-8, too deep
            return None
        try:
            return self._finishers[type(msg)](msg, value, key, headers)
        except Fallback:
            return None

    def _retry(self, value: bytes, unknown_field: bool) -> msgspec.Struct | None:
        """After the current versions' strict Structs refused ``value``: older versions, then lenient.

        A lenient union is tried only where the strict one refused an unknown field.
        """
        retry = [unknown_field]
        for decoder in self._strict[1:]:
            try:
                return decoder.decode(value)  # type: ignore[no-any-return]
            except msgspec.ValidationError as exc:
                retry.append(str(exc).startswith(_UNKNOWN_FIELD))
            except (ValueError, RecursionError):
                return None
        if not any(retry):
            return None
        try:
            orjson.loads(value)
        except (ValueError, RecursionError):
            return None
        for decoder, unknown in zip(self._lenient, retry, strict=True):
            if unknown:
                try:
                    return decoder.decode(value)  # type: ignore[no-any-return]
                except (ValueError, RecursionError):
                    pass
        return None


class _Placeholder(msgspec.Struct, tag_field="event_type", tag="\x00"):
    """A second member for every union: msgspec decodes a tagged Struct that is alone
    even when the tag field is absent. Its finisher always falls back."""


def _fall_back(msg: Any, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Event:
    raise FALLBACK


def _decoder(structs: list[type[msgspec.Struct]]) -> msgspec.json.Decoder[Any]:
    union: Any = typing.Union[tuple([*structs, _Placeholder])]  # noqa: UP007
    # float_hook: a JSON number with a fraction or exponent, in an Any field (money),
    # becomes a Decimal of its literal text: exact, and 9.00 keeps its two decimals.
    return msgspec.json.Decoder(union, float_hook=Decimal)


def _lifter(steps: Sequence[Upcaster], build: Builder) -> Lifter:
    """(raw value, flat?, order_id) -> the current version's payload, as the reference path makes it.

    The message was checked against its own (older) version; this re-reads it
    with its numbers' literal text, upcasts and builds it exactly as
    ``Decoder.decode_reference`` does.
    """

    def lift(value: bytes, flat: bool, order_id: str) -> dict[str, Any]:
        try:
            obj = loads_exact(value)
        except (ValueError, RecursionError):
            raise FALLBACK from None
        payload = obj if flat else {**obj["data"], "order_id": order_id}
        for step in steps:
            payload = step(payload)
        try:
            body: dict[str, Any] = build(payload)
        except (Invalid, ValueError, OverflowError):
            raise FALLBACK from None
        return body

    return lift


def _envelope(schema: Mapping[str, Any]) -> Object:
    """The envelope without `data`, which must be a plain object (the payload's schema types it)."""
    properties = dict(schema.get("properties", {}))
    data = properties.pop(_DATA, None)
    if not isinstance(data, Mapping) or data.get("type") != "object" or set(data) - _ANNOTATIONS - {"type"}:
        raise Unsupported("`data` must be declared as a plain object")
    required = [name for name in schema.get("required", ()) if name != _DATA]
    envelope = translate({**schema, "properties": properties, "required": required}, "envelope")
    if not isinstance(envelope, Object):
        raise Unsupported("not an object")
    missing = {_TAG, _VERSION, _ORDER_ID, *_EVENT_FIELDS} - {f.name for f in envelope.fields}
    if missing:
        raise Unsupported(f"does not declare {sorted(missing)}")
    return envelope


def build_route(
    event_type: str,
    version: int,
    current: int,
    envelope: Object,
    payload_schema: Mapping[str, Any],
    lift: Lifter | None = None,
) -> Route:
    """The Structs and finishing function of one event type and version.

    ``lift`` (older versions only, see :func:`_lifter`) makes the current
    version's payload. Raises :class:`Unsupported`.
    """
    payload = translate(payload_schema, f"{event_type} v{version}")
    if not isinstance(payload, Object):
        raise Unsupported(f"{event_type} v{version}: the payload must be an object")
    env = {f.name: f for f in envelope.fields}
    pay = {f.name: f for f in payload.fields}
    order_id = pay.get(_ORDER_ID)
    if order_id is None or not order_id.required or order_id.node != env[_ORDER_ID].node:
        raise Unsupported(f"{event_type}: order_id must be required and typed as in the envelope")
    shared = (set(env) & set(pay)) - {_ORDER_ID}
    if shared:
        raise Unsupported(f"{event_type}: payload fields {sorted(shared)} are also envelope fields")
    if not _accepts(env[_TAG].node, event_type) or not _accepts(env[_VERSION].node, version):
        raise Unsupported(f"{event_type} v{version}: the envelope refuses this type or version")

    # One Struct for both wire forms: envelope fields, then payload fields that the
    # nested form may omit (the finishing code checks them), then `data`.
    top_fields = [f for f in envelope.fields if f.name not in (_TAG, _VERSION, _ORDER_ID)]
    top = Object(tuple(_unique_attrs([*top_fields, *payload.fields])))
    payload_attrs = Object(tuple(f for f in top.fields if f.name in pay))
    maybe_absent = frozenset(f.name for f in payload.fields if f.required)
    # Literal: another version, or 2.0, is the reference's to judge.
    version_field = (_VERSION, Literal[version], version) if version == 1 else (_VERSION, Literal[version])

    def build(strict: bool) -> type[msgspec.Struct]:
        kind = "Strict" if strict else "Lenient"
        data = struct(payload_attrs, f"{event_type}{kind}Data", strict=strict,
                      optional=frozenset({_ORDER_ID}))
        return struct(
            top, f"{event_type}{kind}", strict=strict, optional=maybe_absent,
            extra=(version_field, (_DATA, data | msgspec.UnsetType, msgspec.UNSET)),
            tag=(_TAG, event_type),
        )

    finish = finisher(event_type, version, current, top, payload_attrs, lift)
    return Route(event_type, version, build(True), build(False), finish)


def _accepts(node: Node, value: str | int) -> bool:
    """Whether a tag or version value satisfies the envelope's schema for it."""
    if not isinstance(node, Scalar) or node.pattern is not None:
        return False
    if isinstance(value, str):
        lo, hi = node.string.get("min_length", 0), node.string.get("max_length", len(value))
        return "string" in node.kinds and lo <= len(value) <= hi
    b = node.number
    return "integer" in node.kinds and not (
        value < b.get("ge", value) or value > b.get("le", value)
        or ("gt" in b and value <= b["gt"]) or ("lt" in b and value >= b["lt"])
    )


def _unique_attrs(fields: Sequence[Field]) -> list[Field]:
    seen: set[str] = set()
    out = []
    for i, f in enumerate(fields):
        attr = f.attr if f.attr not in seen else f"field_{i}_{len(seen)}"
        seen.add(attr)
        out.append(dataclasses.replace(f, attr=attr))
    return out
