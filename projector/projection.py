"""What a projection is, as the engine sees it.

A projection owns some read tables and folds events into them. The engine
(``projector.engine``) owns consuming, checkpoints, dead letters, retries and
the transaction; a projection only turns a batch of new events into row
writes on the connection it is handed, inside that transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from projector.events import Event


class Positioned(NamedTuple):
    """An event with the log position it was read from.

    A NamedTuple rather than a frozen dataclass: made for every record, and a tuple
    is built in one call where a frozen dataclass sets each field through
    ``object.__setattr__``.
    """

    event: Event
    topic: str
    partition: int
    offset: int


class Projection(Protocol):
    """A named, versioned set of read tables maintained from the event stream.

    ``tables`` are logical names (``order_summary``); the engine passes a
    mapping from logical to physical names so that a rebuild can write the same
    projection into shadow tables.
    """

    name: str
    version: int
    tables: tuple[str, ...]

    def ddl(self, physical: Mapping[str, str]) -> list[str]:
        """CREATE statements (tables, then indexes) for the given physical names."""
        ...

    async def apply(
        self, conn: Any, batch: Sequence[Positioned], physical: Mapping[str, str]
    ) -> set[str]:
        """Apply ``batch`` (offset order within each partition) on ``conn``.

        Runs inside the engine's transaction (and possibly a savepoint when the
        engine bisects a failing batch). Must be idempotent for events already
        applied and independent of arrival order. Every written row gets
        ``updated_seq = nextval('projector_updated_seq')``. Returns the logical
        names of the tables it changed.
        """
        ...


class Preparing(Projection, Protocol):
    """A projection that can do the CPU work of :meth:`apply` ahead.

    The engine calls :meth:`prepare` while the previous batch commits, then
    ``apply`` with the same ``batch`` object, which uses what was prepared
    (``apply`` handed any other list, or called again after a failure, does all
    the work itself). Nothing prepared is trusted: ``apply`` must stay correct
    whatever happened between the two calls, including the previous batch not
    committing (the engine then drops this one) or another writer.
    """

    async def prepare(self, batch: Sequence[Positioned], physical: Mapping[str, str]) -> None:
        """Prepare ``batch`` for :meth:`apply`, without the database. May raise:
        ``apply`` then does the work."""
        ...


T = TypeVar("T")


class Ahead(Generic[T]):
    """What a :class:`Preparing` projection prepared for batches not applied yet, by
    batch identity and physical tables. Holds two: the next batch, and one the engine
    dropped (pushed out by the next ones)."""

    def __init__(self) -> None:
        self._items: deque[tuple[Sequence[Positioned], Mapping[str, str], T]] = deque(maxlen=2)

    def put(self, batch: Sequence[Positioned], physical: Mapping[str, str], prepared: T) -> None:
        self._items.append((batch, dict(physical), prepared))

    def take(self, batch: Sequence[Positioned], physical: Mapping[str, str]) -> T | None:
        """What was prepared for this very ``batch`` object (once), else None."""
        for item in self._items:
            if item[0] is batch and item[1] == physical:
                self._items.remove(item)
                return item[2]
        return None
