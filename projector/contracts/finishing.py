"""The finishing functions of the fast path, generated as Python source. Pure code.

msgspec hands over a Struct whose fields have the right types, lengths and
integer bounds. The function generated here for one event type and version
(:func:`finisher`) does the rest, as the reference path would:

* checks what msgspec left to Python (:mod:`projector.contracts.checks`):
  money, string patterns, timestamps;
* resolves the wire form: the payload beside the envelope (then every
  required payload field must be there) or under ``data`` (then ``order_id``
  may come from the envelope, and must agree if in both);
* builds ``Event.payload`` (every declared field, absent ones as None, item
  lists as tuples of dicts), or, for an older version, lifts the message to the
  current one as the reference path does;
* compares the Kafka key, takes the correlation id from the headers when the
  body has none, and makes the :class:`~projector.events.Event`.

Anything unusual raises :data:`~projector.contracts.checks.FALLBACK`: the
reference path decides, and words a rejection. Like
:mod:`projector.contracts.compiler`, the source is generated so that the usual
case runs as straight-line code; it is kept as the function's ``__doc__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from projector.contracts import checks
from projector.contracts.checks import FALLBACK
from projector.contracts.structs import Array, Node, Object, Scalar
from projector.events import Event

CORRELATION_HEADER = "correlation_id"

Finisher = Callable[[Any, bytes, bytes | None, Sequence[tuple[str, bytes]]], Event]
Lifter = Callable[[bytes, bool, str], dict[str, Any]]

ORDER_ID = "order_id"


def finisher(event_type: str, version: int, current: int, top: Object, payload: Object,
             lift: Lifter | None) -> Finisher:
    """The finishing function of ``event_type`` at ``version``: (Struct, raw value, key, headers) -> Event.

    ``top`` describes the decoded Struct (envelope and payload fields),
    ``payload`` the payload fields among them (the ``data`` Struct has the same
    attributes). ``lift``, for an older version only, makes the current
    version's payload from the raw value.
    """
    return _Generator(event_type, version, current).finisher(top, payload, lift)


class _Generator:
    """Writes the finishing function of one event type (see the module docstring)."""

    def __init__(self, event_type: str, version: int, current: int) -> None:
        self.event_type = event_type
        self.version = version
        self.current = current
        self.check_only = False  # an older version: check its payload, build nothing
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self._n = 0

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any, prefix: str = "_K") -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def finisher(self, top: Object, payload: Object, lift: Lifter | None) -> Finisher:
        by_name = {f.name: f for f in top.fields}
        pay = {f.name for f in payload.fields}
        e = 1
        env_out: dict[str, str] = {}
        for f in top.fields:  # envelope fields: checked and converted whatever the form
            if f.name not in pay:
                env_out[f.name] = self.value(f.node, f"m.{f.attr}", e, may_be_none=not f.required)
        oid = by_name[ORDER_ID].attr
        required = [f"m.{f.attr} is _UNSET" for f in payload.fields if f.required]
        self.emit(e, "d = m.data")
        self.emit(e, "if d is _UNSET:  # flat: the payload sits beside the envelope")
        self.emit(e + 1, f"if {' or '.join(required)}:")
        self.emit(e + 2, "raise _FALLBACK")
        self.emit(e + 1, f"order_id = m.{oid}")
        self.emit(e + 1, "d = m")
        self.emit(e, "else:  # nested under data; order_id in data, in the envelope, or equal in both")
        self.emit(e + 1, f"order_id = d.{oid}")
        self.emit(e + 1, "if order_id is _UNSET:")
        self.emit(e + 2, f"order_id = m.{oid}")
        self.emit(e + 2, "if order_id is _UNSET:")
        self.emit(e + 3, "raise _FALLBACK")
        self.emit(e + 1, f"elif m.{oid} is not _UNSET and m.{oid} != order_id:")
        self.emit(e + 2, "raise _FALLBACK")
        items = []
        self.check_only = lift is not None
        for f in payload.fields:
            source = "order_id" if f.name == ORDER_ID else f"d.{f.attr}"
            out = self.value(f.node, source, e, may_be_none=not f.required)
            if lift is not None:
                if "(" in out:  # a time value converts lazily: that is its check
                    self.emit(e, out)
            elif f.name == ORDER_ID and out != "order_id":
                self.emit(e, f"order_id = {out}")
                out = "order_id"
            items.append(f"{f.name!r}: {out}")
        payload_expr = f"{{{', '.join(items)}}}"
        if lift is not None:  # an older version, checked as it is: lift it as the reference does
            self.emit(e, "payload = _lift(value, d is m, order_id)")
            self.emit(e, "order_id = payload['order_id']")
            payload_expr = "payload"
        self.emit(e, "if key and key != order_id.encode():  # key_mismatch: the reference words it")
        self.emit(e + 1, "raise _FALLBACK")
        self.emit(e, f"correlation_id = {env_out['correlation_id']}")
        self.emit(e, "if correlation_id is None and headers:")
        self.emit(e + 1, "correlation_id = _header(headers)")
        self.emit(e, f"return _event({env_out['event_id']}, {self.event_type!r}, order_id, "
                     f"{env_out['timestamp']}, {payload_expr}, {self.current}, correlation_id, "
                     f"{env_out['causation_id']}, {env_out['producer']})")
        func = f"finish_{self.event_type}_v{self.version}"
        source = f"def {func}(m, value, key, headers):\n" + "\n".join(self.lines) + "\n"
        namespace: dict[str, Any] = {
            "_UNSET": msgspec.UNSET,
            "_FALLBACK": FALLBACK,
            "_Decimal": Decimal,
            "_header": header,
            "_event": make_event,
            "_lift": lift,
            **self.consts,
        }
        exec(compile(source, f"<fast path {self.event_type} v{self.version}>", "exec"), namespace)
        finish: Finisher = namespace[func]
        finish.__doc__ = f"Finish a decoded {self.event_type} v{self.version} (generated).\n\n{source}"
        return finish

    def value(self, node: Node, expr: str, ind: int, *, may_be_none: bool) -> str:
        """Emit the checks of ``node`` on ``expr``; return the output expression."""
        if isinstance(node, Scalar):
            return self._scalar(node, expr, ind, may_be_none or node.nullable)
        if not self._needs_work(node):
            return expr  # msgspec already built it: a str, an int, a tuple of them
        if self.check_only:
            self._check(node, expr, ind, may_be_none)
            return expr
        out = self.fresh("o")
        if may_be_none:
            self.emit(ind, f"if {expr} is None:")
            self.emit(ind + 1, f"{out} = None")
            self.emit(ind, "else:")
            ind += 1
        if isinstance(node, Array):
            acc, item = self.fresh("acc"), self.fresh("item")
            self.emit(ind, f"{acc} = []")
            self.emit(ind, f"for {item} in {expr}:")
            self.emit(ind + 1, f"{acc}.append({self.value(node.items, item, ind + 1, may_be_none=False)})")
            self.emit(ind, f"{out} = tuple({acc})")
        else:
            var = expr
            if not expr.isidentifier():
                var = self.fresh("s")
                self.emit(ind, f"{var} = {expr}")
            parts = [f"{f.name!r}: {self.value(f.node, f'{var}.{f.attr}', ind, may_be_none=not f.required)}"
                     for f in node.fields]
            self.emit(ind, f"{out} = {{{', '.join(parts)}}}")
        return out

    def _check(self, node: Array | Object, expr: str, ind: int, may_be_none: bool) -> None:
        if may_be_none:
            self.emit(ind, f"if {expr} is not None:")
            ind += 1
        if isinstance(node, Array):
            item = self.fresh("item")
            self.emit(ind, f"for {item} in {expr}:")
            self.value(node.items, item, ind + 1, may_be_none=False)
            return
        var = expr
        if not expr.isidentifier():
            var = self.fresh("s")
            self.emit(ind, f"{var} = {expr}")
        for f in node.fields:
            if self._needs_work(f.node):
                out = self.value(f.node, f"{var}.{f.attr}", ind, may_be_none=not f.required)
                if "(" in out:
                    self.emit(ind, out)

    def _needs_work(self, node: Node) -> bool:
        if isinstance(node, Scalar):
            return node.decode is not None or (node.pattern is not None and "string" in node.kinds)
        if isinstance(node, Array):
            return self._needs_work(node.items)
        # A Struct becomes a dict; when only checking, only its fields matter.
        return not self.check_only or any(self._needs_work(f.node) for f in node.fields)

    def _scalar(self, node: Scalar, expr: str, ind: int, may_be_none: bool) -> str:
        if node.decode is None and (node.pattern is None or "string" not in node.kinds):
            return expr
        var = self.fresh("v")
        self.emit(ind, f"{var} = {expr}")
        if node.decode == "money":
            check = self.const(checks.money_check(node, may_be_none=may_be_none), "_money")
            test = checks.fast_money_test(node, var)
            self.emit(ind, f"if not {test}{f' and {var} is not None' if may_be_none else ''}:")
            self.emit(ind + 1, f"{var} = {check}({var})")
        elif node.decode == "timestamp":
            memo, convert = checks.timestamp_check(node)
            return f"({self.const(memo, '_tsmemo')}.get({var}) or {self.const(convert, '_ts')}({var}))"
        else:
            assert node.pattern is not None
            memo_set, check_pattern = checks.pattern_check(node.pattern)
            self.emit(ind, f"if {var} not in {self.const(memo_set, '_seen')}:")
            self.emit(ind + 1, f"{self.const(check_pattern, '_pattern')}({var})")
        return var


def header(headers: Sequence[tuple[str, bytes]], name: str = CORRELATION_HEADER) -> str | None:
    """The first non-empty UTF-8 value of header ``name``, else None."""
    for h, value in headers:
        if h == name and value:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


# The arguments the generated code passes to make_event, positionally.
_EVENT_ARGS = ("event_id", "event_type", "order_id", "occurred_at", "payload", "schema_version",
               "correlation_id", "causation_id", "producer")


def _event_factory() -> Callable[..., Event]:
    """``Event(...)`` at a quarter of the cost.

    Event is a frozen dataclass: its ``__init__`` sets each of its nine fields
    through ``object.__setattr__``, ~2 µs per Event on the development VM, a
    third of the fast path. Here the fields are stored in an instance of an
    unfrozen class with the same slots, whose ``__class__`` is then set to
    Event. Python allows that between classes of the same layout, and the
    result is an ordinary Event (==, hash, repr, isinstance); ~0.5 µs. Checked
    once here: should Event stop being a plain slotted dataclass of these
    fields, the class itself is used.
    """
    names = tuple(f.name for f in dataclasses.fields(Event))
    if (names != _EVENT_ARGS or getattr(Event, "__slots__", None) != names
            or Event.__bases__ != (object,) or hasattr(Event, "__post_init__")):
        return Event
    fields_only = type("_EventFields", (), {"__slots__": names})
    body = "".join(f"    e.{n} = {n}\n" for n in names)
    source = (f"def make_event({', '.join(names)}):\n    e = _new(_EventFields)\n{body}"
              "    e.__class__ = _Event\n    return e\n")
    namespace: dict[str, Any] = {"_new": object.__new__, "_EventFields": fields_only, "_Event": Event}
    exec(compile(source, "<make_event>", "exec"), namespace)
    make: Callable[..., Event] = namespace["make_event"]
    try:
        sample: tuple[Any, ...] = tuple(f"<{n}>" for n in names)
        if make(*sample) != Event(*sample):
            return Event
    except TypeError:  # "__class__ assignment: ... object layout differs"
        return Event
    return make


make_event = _event_factory()
