"""Keyset pagination: orderings, opaque cursors, page windows and their SQL.

A cursor is ``base64url(orjson([version, ordering tag, *sort key values]))``:
the sort key of the edge's row, never an offset, so pages stay put while rows
are inserted before them. Every ordering ends with a unique column, and its
columns are NOT NULL in the rows listed (the callers exclude rows with NULL
sort keys), so the order is total and deterministic.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import orjson

from api.db import Where
from api.errors import ApiError

DEFAULT_PAGE = 20
MAX_PAGE = 100
CURSOR_VERSION = 1

R = TypeVar("R")

# How each sort key type travels inside a cursor (JSON has no datetime or decimal).
_ENCODE: dict[type, Any] = {
    datetime: datetime.isoformat, date: date.isoformat, Decimal: str, str: str, int: int,
}
_DECODE: dict[type, Any] = {
    datetime: datetime.fromisoformat, date: date.fromisoformat, Decimal: Decimal, str: str, int: int,
}
# base64 to base64url (what base64.urlsafe_b64encode does, without its Python layers).
_URLSAFE = bytes.maketrans(b"+/", b"-_")
# The JSON type each encoded value must have before decoding.
_JSON_TYPE: dict[type, type] = {datetime: str, date: str, Decimal: str, str: str, int: int}


@dataclass(frozen=True, slots=True)
class Ordering:
    """A keyset ordering: ``(column, descending)`` pairs, the last one unique.

    ``tag`` names the ordering inside cursors, so that a cursor handed to
    another ordering is refused rather than silently misread; ``types`` are the
    Python types of the sort key values.
    """

    tag: str
    columns: tuple[tuple[str, bool], ...]
    types: tuple[type, ...]
    # (column, encoder) pairs, made once: a cursor is made for every edge read.
    _sort: tuple[tuple[str, Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sort", tuple(
            (c, _ENCODE[t]) for (c, _), t in zip(self.columns, self.types, strict=True)))

    def order_by(self, backward: bool = False) -> str:
        """The ORDER BY list, reversed when reading a page backwards."""
        return ", ".join(f"{c} {'DESC' if desc != backward else 'ASC'}" for c, desc in self.columns)

    def cursor(self, row: Mapping[str, Any]) -> str:
        """The opaque cursor of a row (which must hold every sort column)."""
        raw = orjson.dumps([CURSOR_VERSION, self.tag, *[encode(row[c]) for c, encode in self._sort]])
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()

    def decode(self, cursor: str, argument: str) -> tuple[Any, ...]:
        """The sort key in ``cursor``; ApiError naming ``argument`` when malformed."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            payload = orjson.loads(raw)
        except (binascii.Error, ValueError) as exc:
            raise _bad_cursor(argument) from exc
        if (not isinstance(payload, list) or len(payload) != 2 + len(self.types)
                or payload[0] != CURSOR_VERSION or not isinstance(payload[1], str)):
            raise _bad_cursor(argument)
        if payload[1] != self.tag:
            raise ApiError(f"`{argument}` is a cursor of another list or ordering: a cursor only "
                           "works with the field and orderBy that returned it")
        values = []
        for value, kind in zip(payload[2:], self.types, strict=True):
            if type(value) is not _JSON_TYPE[kind]:
                raise _bad_cursor(argument)
            try:
                values.append(_DECODE[kind](value))
            except (ValueError, InvalidOperation) as exc:
                raise _bad_cursor(argument) from exc
        return tuple(values)


def _bad_cursor(argument: str) -> ApiError:
    return ApiError(f"`{argument}` is not a valid cursor: pass a cursor (startCursor, endCursor "
                    "or an edge's cursor) returned by this same field")


@dataclass(frozen=True, slots=True)
class Window:
    """A validated page request: up to ``limit`` rows after/before the given keys."""

    limit: int
    backward: bool = False
    after: tuple[Any, ...] | None = None
    before: tuple[Any, ...] | None = None


def window(ordering: Ordering, *, first: int | None, after: str | None,
           last: int | None = None, before: str | None = None) -> Window:
    """Check the Relay arguments: ``first``/``last`` default 20, at most 100, not both."""
    if first is not None and last is not None:
        raise ApiError("pass `first` or `last`, not both")
    argument, count = ("last", last) if last is not None else ("first", first)
    if count is None:
        count = DEFAULT_PAGE
    if not 0 <= count <= MAX_PAGE:
        raise ApiError(f"`{argument}` must be between 0 and {MAX_PAGE} (got {count}): "
                       "page through longer lists with the cursors")
    return Window(
        limit=count,
        backward=last is not None,
        after=ordering.decode(after, "after") if after is not None else None,
        before=ordering.decode(before, "before") if before is not None else None,
    )


def keyset(where: Where, ordering: Ordering, win: Window) -> None:
    """Add the conditions selecting the rows strictly between the window's cursors."""
    if win.after is not None:
        where.add(_beyond(where, ordering.columns, win.after, forward=True))
    if win.before is not None:
        where.add(_beyond(where, ordering.columns, win.before, forward=False))


def _beyond(where: Where, columns: Sequence[tuple[str, bool]], key: Sequence[Any],
            forward: bool) -> str:
    params = [where.param(v) for v in key]
    ops = ["<" if desc == forward else ">" for _, desc in columns]

    def rest(i: int) -> str:
        column, op, p = columns[i][0], ops[i], params[i]
        if i == len(columns) - 1:
            return f"{column} {op} {p}"
        return f"({column} {op} {p} OR ({column} = {p} AND {rest(i + 1)}))"

    if len(columns) == 1:
        return rest(0)
    # The leading `c op= p` is a plain range on the index's first column, which
    # the planner uses as an index bound; the rest only filters at the edge.
    first, op, p = columns[0][0], ops[0], params[0]
    tail = rest(1)
    return f"{first} {op}= {p} AND ({first} {op} {p} OR {tail})"


def fetch_limit(win: Window) -> int:
    """Rows to fetch: one more than the page, to learn whether more follow."""
    return win.limit + 1


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """The rows of a page in list order, and whether rows lie beyond each end."""

    rows: Sequence[R]
    has_next: bool
    has_previous: bool


def page(rows: Sequence[R], win: Window) -> Page[R]:
    """Trim the extra row and restore list order (a backward read comes reversed)."""
    more = len(rows) > win.limit
    kept = list(rows[:win.limit])
    if win.backward:
        kept.reverse()
        return Page(kept, has_next=win.before is not None, has_previous=more or win.after is not None)
    return Page(kept, has_next=more or win.before is not None, has_previous=win.after is not None)
