"""CQRS read-model projection server: Kafka order events into PostgreSQL read models."""

from __future__ import annotations

__version__ = "0.1.0"

from projector import native as _native

_native.check()  # before any compiled module is imported
