"""Logs: JSON lines with LOG_FORMAT=json, carrying the event context."""

from __future__ import annotations

import io
import logging

import orjson
from enginekit import simulate

from projector import logs
from projector.engine import event_context
from projector.events import Event
from projector.projection import Positioned


def test_json_lines_carry_the_event_fields() -> None:
    record = next(r for r in simulate(("t",) * 10, orders=1, seed=1) if r.event)
    assert isinstance(record.event, Event)
    pe = Positioned(record.event, "t", 2, 41)
    stream = io.StringIO()
    logs.configure("INFO", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        logging.getLogger("projector.engine").error(
            "projection %s failed on event %s", "orders", pe.event.event_id,
            extra=event_context(pe, "orders"))
    finally:
        logs.configure("INFO", "text")
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["level"] == "error" and line["logger"] == "projector.engine"
    assert line["event_id"] == pe.event.event_id and line["order_id"] == pe.event.order_id
    assert line["correlation_id"] == pe.event.correlation_id
    assert (line["topic"], line["partition"], line["offset"]) == ("t", 2, 41)
    assert "failed on event" in line["msg"]


def test_text_is_the_default() -> None:
    stream = io.StringIO()
    logs.configure("INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("projector").info("hello %s", "there")
    assert "INFO" in stream.getvalue() and "hello there" in stream.getvalue()
    assert not stream.getvalue().lstrip().startswith("{")
