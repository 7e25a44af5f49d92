"""GraphQL API over the read models (strawberry on Starlette, served by uvicorn)."""
