"""Upcasters: small pure functions that lift a payload one schema version up.

``UPCASTERS[(event_type, v)]`` turns a valid v payload into a v+1 payload. The
decoder applies them step by step until the current version, so adding v3
means adding one v2 -> v3 function, never rewriting the older ones. They work
on parsed JSON (before money becomes Decimal) and must not mutate their input.

Every schema version below the current one needs an upcaster; the decoder
checks this when it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Upcaster = Callable[[Mapping[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the ``from_version`` -> +1 step of ``event_type``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"two upcasters registered for {event_type} v{from_version}")
        UPCASTERS[key] = fn
        return fn

    return register


@upcaster("OrderPlaced", 1)
def _order_placed_v1_to_v2(payload: Mapping[str, Any]) -> dict[str, Any]:
    # v1 predates multi-currency and item prices: every amount was USD, items
    # were {sku, quantity} and the total was `total`.
    out = {k: v for k, v in payload.items() if k not in ("items", "total")}
    out["items"] = [{"sku": item["sku"], "qty": item["quantity"]} for item in payload["items"]]
    out["total_amount"] = payload["total"]
    out["currency"] = "USD"
    return out
