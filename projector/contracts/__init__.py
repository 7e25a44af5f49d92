"""Event contracts: the JSON Schemas in ``schemas/`` and the decoder that applies them.

``decode(value, key, headers)`` turns one Kafka record into an
:class:`~projector.events.Event` or a :class:`~projector.events.Rejection`.
"""

from __future__ import annotations

from projector.contracts.decoder import CORRELATION_HEADER, Decoder, decode, default_decoder
from projector.contracts.registry import SCHEMA_DIR, Catalogue, Contract, load_catalogue
from projector.contracts.upcasters import UPCASTERS, upcaster

__all__ = [
    "CORRELATION_HEADER",
    "SCHEMA_DIR",
    "UPCASTERS",
    "Catalogue",
    "Contract",
    "Decoder",
    "decode",
    "default_decoder",
    "load_catalogue",
    "upcaster",
]
