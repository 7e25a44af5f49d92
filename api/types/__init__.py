"""One GraphQL type per module, each with its resolvers; SQL lives in ``api.sql``."""
