"""Turning validated JSON values into the values an Event carries. Pure code.

Money. orjson parses every JSON number with a fraction into a float. A float is
turned into a Decimal through ``repr``, the shortest string that reads back as
the same float. For a literal of at most 15 significant digits that string has
the literal's value exactly (doubles hold 15 decimal digits: two different
15-digit decimals never share a double), so ``0.1`` gives ``Decimal("0.1")``,
not the binary ``0.1000000000000000055...``. A longer ``repr`` means the literal
had 16+ digits (or was an integer beyond 64 bits, which orjson silently turns
into a float) and may have lost some: :func:`to_decimal` raises
:class:`InexactNumber` and the decoder re-parses that one message with the
standard library, keeping each number's text (:class:`NumberLiteral`).
So every amount is exact, and the common case pays only a ``repr``.
Decimals keep the producer's exponent when they can (``"12.50"`` stays
``Decimal("12.50")``, the number ``12.50`` becomes ``Decimal("12.5")``); the
values compare equal either way.

Timestamps. An integer is Unix time in seconds; a string is RFC 3339 with an
offset (the schema's pattern guarantees it). Both become timezone-aware UTC
datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from projector.contracts.registry import Field, Kind

Builder = Callable[[Mapping[str, Any]], dict[str, Any]]
_Converter = Callable[[Any], Any]


class InexactNumber(ValueError):
    """A JSON number may have lost digits in the float parse; re-parse exactly."""


class NumberLiteral(float):
    """A JSON number that remembers its source text (the exact slow path).

    A float subclass, so the compiled validators treat it as a number.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> NumberLiteral:
        self = super().__new__(cls, text)
        self.text = text
        return self


def to_decimal(value: Any) -> Decimal:
    """A validated money value (int, float, decimal string, NumberLiteral) as an exact Decimal."""
    kind = type(value)
    if kind is float:
        text = float.__repr__(value)
        # Fewer than 17 characters: at most 15 significant digits (see module docstring).
        if len(text) > 16 and _significant_digits(text) > 15:
            raise InexactNumber(text)
        return Decimal(text)
    if kind is NumberLiteral:
        return Decimal(value.text)
    if kind is int or kind is str:
        return Decimal(value)
    raise TypeError(f"not a money value: {value!r}")


def _significant_digits(text: str) -> int:
    mantissa = text.partition("e")[0].replace(".", "").lstrip("-0")
    return len(mantissa)


def to_datetime(value: Any) -> datetime:
    """A validated timestamp (Unix seconds or RFC 3339 with offset) as a UTC datetime.

    Raises ValueError for a well-formed but impossible date (February 30th).
    """
    if type(value) is str:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:  # the schema pattern forbids it; keep the invariant anyway
            raise ValueError(f"{value!r} has no UTC offset")
        return parsed.astimezone(UTC)
    # int, or an integral float (1.7e9 and 1700000000.0 are integers in JSON Schema)
    return datetime.fromtimestamp(int(value), UTC)


def payload_builder(fields: tuple[Field, ...]) -> Builder:
    """A function mapping a validated payload to ``Event.payload``.

    The result has exactly the declared fields, absent optional ones as None,
    money as Decimal, timestamps as UTC datetimes and arrays of objects as
    tuples of dicts normalised the same way. Unknown fields are dropped.
    """
    plan: tuple[tuple[str, _Converter | None], ...] = tuple(
        (f.name, _converter(f)) for f in fields
    )

    def build(source: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        get = source.get
        for name, convert in plan:
            value = get(name)
            out[name] = value if convert is None or value is None else convert(value)
        return out

    return build


def _converter(field: Field) -> _Converter | None:
    if field.kind is Kind.MONEY:
        return to_decimal
    if field.kind is Kind.TIMESTAMP:
        return to_datetime
    if field.kind is Kind.RECORDS:
        build = payload_builder(field.fields)

        def records(values: list[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
            return tuple([build(v) for v in values])

        return records
    return None
