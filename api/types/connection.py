"""Relay connections: ``XConnection { edges { cursor node } pageInfo totalCount }``.

``totalCount`` is a resolver over a private thunk: the count query runs only
when a client selects the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import strawberry

from api.pagination import Ordering, Page

NodeT = TypeVar("NodeT")


@strawberry.type(description="Where a page lies in its list (Relay).")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str = strawberry.field(description="Opaque; pass it as `after` or `before`.")
    node: NodeT

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set: `cursor` of an edge made by
        # connection(), computed on first read (most clients select node only).
        found = self.__dict__
        if name != "cursor" or "_row" not in found:
            raise AttributeError(name)
        cursor: str = found["_ordering"].cursor(found["_row"])
        found["cursor"] = cursor
        return cursor


def _edge(row: Mapping[str, Any], ordering: Ordering, node: Any) -> Edge[Any]:
    edge: Edge[Any] = Edge.__new__(Edge)
    edge.__dict__.update(node=node, _row=row, _ordering=ordering)
    return edge


async def _total_count(root: Connection[Any]) -> int:
    return await root._count()


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]
    total_count = strawberry.field(
        resolver=_total_count,
        description="All items matching the filters, cursors aside; counted only when selected.")


def connection(page: Page[Mapping[str, Any]], ordering: Ordering,
               node: Callable[[Mapping[str, Any]], NodeT],
               count: Callable[[], Awaitable[int]]) -> Connection[NodeT]:
    """A Connection of ``page``'s rows, each made into a node by ``node``."""
    edges = [_edge(row, ordering, node(row)) for row in page.rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        _count=count,
    )
