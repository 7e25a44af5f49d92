"""Turning validated JSON values into the values an Event carries. Pure code.

Money is exact and keeps the producer's digits: the number ``12.50`` and the
string ``"12.50"`` both become ``Decimal("12.50")``, ``0.1`` stays
``Decimal("0.1")``, a 20-digit amount keeps its 20 digits. The fast path gets
this from msgspec (``float_hook=Decimal`` reads the literal text). The
reference path parses with orjson, whose floats lose the literal, then reads
the message again keeping each number's text (:func:`loads_exact`,
:class:`NumberLiteral`); that also keeps integers beyond 64 bits, which
orjson turns into floats. Should that second reading
fail (nesting deeper than Python's recursion limit), the orjson floats are
used through ``repr``, the shortest string that reads back as the same float:
for a literal of at most 15 significant digits it has the literal's value
(two different 15-digit decimals never share a double), only maybe not its
trailing zeros; a message with a longer number (:func:`has_long_number`) is
then refused.

Timestamps. An integer is Unix time in seconds; a string is RFC 3339 with an
offset (the schema's pattern guarantees it). Both become timezone-aware UTC
datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec


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


def exact_number(text: str) -> float:
    """A float that remembers its literal (the ``float_hook`` of :func:`loads_exact`).

    Except a negative literal too small for a double (``-1e-400``): the float
    is ``-0.0``, which passes ``minimum: 0``, so it is kept as that float (and
    becomes ``Decimal("-0.0")``) rather than carry a negative text.
    """
    value = NumberLiteral(text)
    if value == 0.0 and Decimal(text) < 0:
        return float(text)
    return value


# msgspec rather than json.loads: half the time, and integers of any size stay exact.
_exact_decoder = msgspec.json.Decoder(float_hook=exact_number)


def loads_exact(raw: bytes) -> Any:
    """Parse JSON keeping every number's literal text (:class:`NumberLiteral`).

    Raises ValueError (an integer of over 4,300 digits, invalid JSON) or
    RecursionError (nesting deeper than ~1,000, where orjson allows 1,024).
    """
    return _exact_decoder.decode(raw)


# Digits and the decimal point -> "9", everything else -> " ".
_DIGITS_TABLE = bytes(0x39 if c in b"0123456789." else 0x20 for c in range(256))
_LONG_RUN = b"9" * 16


def has_long_number(raw: bytes) -> bool:
    """Whether ``raw`` may hold a number literal of 16+ significant digits.

    True for every such literal (its mantissa is a run of 16+ digits, maybe
    with a point); also for long digit runs inside strings, which only costs
    the exact re-parse.
    """
    return _LONG_RUN in raw.translate(_DIGITS_TABLE)


def to_decimal(value: Any) -> Decimal:
    """A validated money value as an exact Decimal.

    A plain float must come from a literal of at most 15 significant digits
    (the decoder guarantees it, see :func:`has_long_number`).
    """
    kind = type(value)
    if kind is float:
        return Decimal(float.__repr__(value))
    if kind is NumberLiteral:
        return Decimal(value.text)
    if kind is int or kind is str:
        return Decimal(value)
    raise TypeError(f"not a money value: {value!r}")


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
