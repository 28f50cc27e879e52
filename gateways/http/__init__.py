"""The aiohttp HTTP gateway: the `/api/v1` JSON API, the operations endpoints and the OpenAPI
document. `app.make_app` builds the application; `ops.add_ops_routes` also serves the ops endpoints
of roles that run no gateway. Imported by `gateways.roles` and the tests; nothing below the
gateways layer may import it.
"""
