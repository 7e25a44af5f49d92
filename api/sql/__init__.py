"""Read SQL, one module per read table (as ``projector/projections`` has one per read model).

Functions here take a ReadDb, the Viewer and plain values, and return
asyncpg records; the GraphQL types in ``api.types`` turn records into objects.
Every read of orders or customers goes through :func:`restrict`, so a
customer's visibility is part of the statement itself.
"""

from __future__ import annotations

from api.auth import Viewer
from api.db import Where


def restrict(where: Where, viewer: Viewer, column: str = "customer_id") -> None:
    """Limit a customer viewer to its own rows (``column = $viewer``); admins see all."""
    if viewer.customer_id is not None:
        where.add(f"{column} = {where.param(viewer.customer_id)}")


def status_clause(where: Where, statuses: tuple[str, ...]) -> str:
    """``status = $n`` for one status (the (status, placed_at) index then also
    orders the rows), ``status = ANY($n)`` for several."""
    if len(statuses) == 1:
        return f"status = {where.param(statuses[0])}"
    return f"status = ANY({where.param(list(statuses))}::text[])"
