"""Custom scalars: ``Long`` for Kafka offsets and counts beyond GraphQL's 32-bit Int."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

Long = NewType("Long", int)


def _parse_long(value: Any) -> int:
    # Accept strings too: JavaScript clients lose precision above 2^53.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"Long cannot represent {value!r}")
    return int(value)


SCALARS: dict[object, ScalarDefinition] = {
    Long: strawberry.scalar(
        name="Long",
        description="A 64-bit integer (Kafka offsets, lags), serialised as a JSON number.",
        serialize=int, parse_value=_parse_long),
}
