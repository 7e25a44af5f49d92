"""A deterministic order-event simulator, usable as a library and by ``projector simulate``.

``generate(options)`` yields :class:`Record` values lazily (topic, key, value,
headers, and what decoding must give); ``publish(records, bootstrap)`` sends
them with aiokafka. Valid records carry the expected
:class:`~projector.events.Event`, so tests can fold a simulation in memory.
"""

from __future__ import annotations

from projector.simulator.generator import Kind, Record, generate
from projector.simulator.options import DEFAULT_OUTCOMES, SimulationOptions, topic_map_for
from projector.simulator.publisher import PublishStats, publish, publish_demo

__all__ = [
    "DEFAULT_OUTCOMES",
    "Kind",
    "PublishStats",
    "Record",
    "SimulationOptions",
    "generate",
    "publish",
    "publish_demo",
    "topic_map_for",
]
