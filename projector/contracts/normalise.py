"""Turning validated JSON values into the values an Event carries. Pure code.

Money. orjson parses a JSON number with a fraction into a float, and a float
is turned into a Decimal through ``repr``, the shortest string that reads
back as the same float. For a literal of at most 15 significant digits that
string has the literal's value exactly (doubles hold 15 decimal digits: two
different 15-digit decimals never share a double), so ``0.1`` gives
``Decimal("0.1")``, not the binary ``0.1000000000000000055...``. A literal of
16 or more digits may have lost some in the float, and the float cannot tell
(``0.10000000000000001`` reads back as ``0.1``). So the decoder first looks at
the raw bytes (:func:`has_long_number`): a message with a run of 16 or more
digits anywhere is parsed a second time with the standard library, which
keeps each number's text (:class:`NumberLiteral`). That also covers integers
beyond 64 bits, which orjson silently turns into floats. Every amount is thus
exact; the common case pays one ``bytes.translate``.
Decimals keep the producer's exponent when they can (``"12.50"`` stays
``Decimal("12.50")``, the number ``12.50`` becomes ``Decimal("12.5")``); the
values compare equal either way.

Timestamps. An integer is Unix time in seconds; a string is RFC 3339 with an
offset (the schema's pattern guarantees it). Both become timezone-aware UTC
datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


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
