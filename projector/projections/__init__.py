"""The read models, one module per table, and the projections that maintain them.

- ``orders``: ``order_summary`` (folded per order) and the aggregates
  ``customer_summary``, ``product_sales``, ``daily_sales`` (maintained from
  per-order contribution deltas).
- ``timeline``: ``order_timeline``, one row per event.
"""

from __future__ import annotations

from collections.abc import Mapping

from projector.projection import Projection
from projector.projections.order_timeline import TimelineProjection
from projector.projections.orders import OrdersProjection

ALL: tuple[Projection, ...] = (OrdersProjection(), TimelineProjection())


def by_name() -> Mapping[str, Projection]:
    """Every projection by its ``name`` (``"orders"``, ``"timeline"``)."""
    return {p.name: p for p in ALL}
