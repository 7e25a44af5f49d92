"""The committed SDL (api/schema.graphql) is the schema the code builds."""

from __future__ import annotations

from pathlib import Path

from api.schema import schema

SDL = Path(__file__).resolve().parent.parent / "api" / "schema.graphql"
REGENERATE = ("python -c \"from api.schema import schema; "
              "open('api/schema.graphql', 'w').write(str(schema) + '\\n')\"")


def test_committed_sdl_matches_the_code() -> None:
    assert SDL.read_text() == str(schema) + "\n", f"api/schema.graphql is stale: run {REGENERATE}"


def test_sdl_has_the_fixed_names() -> None:
    sdl = SDL.read_text()
    for line in (
        "order(orderId: ID!): Order",
        "orderBy: OrderOrderBy = PLACED_AT_DESC",
        "customer(customerId: ID!): Customer",
        "customers(orderBy: CustomerOrderBy = TOTAL_SPENT_DESC",
        "product(sku: ID!): Product",
        "topProducts(by: ProductRanking = REVENUE, limit: Int = 10): [Product!]!",
        "projections: [ProjectionStatus!]!",
        "): DeadLetterConnection!",
        "): [DailySales!]!",
        "orderUpdated(orderId: ID = null, customerId: ID = null, status: [OrderStatus!] = null): Order!",
        "orderStatusChanged(status: [OrderStatus!] = null): OrderStatusChange!",
        "dailySalesUpdated(",
        "): DailySales!",
        "projectionProgress(name: String = null): ProjectionStatus!",
        "previousStatus: OrderStatus",
    ):
        assert line in sdl
