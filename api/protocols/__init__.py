"""GraphQL over WebSocket: one module per subprotocol, both on /graphql.

- ``graphql_transport_ws``: the graphql-ws library's protocol (current clients).
- ``graphql_ws``: the legacy subscriptions-transport-ws protocol (Apollo's old client).
- ``socket``: what both share: text frames, the slow-client rule, connection metrics.

Strawberry's handlers do the protocol; ours add what it leaves to the
application: authentication on connection_init (``api.view``), server
keep-alive, an init timeout for the legacy protocol, and dropping a client
that stops reading.
"""
