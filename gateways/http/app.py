"""The gateway's aiohttp application: middlewares (request ids outermost, then metrics, error
mapping and the request deadline; every response says its `X-Request-Id`), the `/api/v1`
routes, the OpenAPI document, the ops endpoints and the live-updates hub of the SSE routes
(`gateways.http.live`).
Imported by `gateways.roles` and the tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiohttp import web

from gateways.bootstrap import Container
from gateways.http import (
    ops,
    routes_access,
    routes_audit,
    routes_checkpoints,
    routes_credentials,
    routes_executions,
    routes_export,
    routes_hooks,
    routes_identity,
    routes_live,
    routes_reruns,
    routes_signals,
    routes_signing,
    routes_stats,
    routes_variables,
    routes_workflows,
)
from gateways.http.admission import ADMISSION, Admission
from gateways.http.auth import KEY_USAGE, KeyUsage
from gateways.http.context import CONTAINER
from gateways.http.deadline import deadline_middleware
from gateways.http.errors import Handler, error_middleware
from gateways.http.live import HUB, Hub
from gateways.http.openapi import add_openapi_route
from gateways.http.request_ids import answer_request_id, request_id_middleware
from gateways.http.routing import Route, add_routes
from infra import metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def api_routes() -> list[Route]:
    """Every route of the JSON API (not the ops endpoints)."""
    return [
        *routes_identity.ROUTES,
        *routes_access.ROUTES,
        *routes_stats.ROUTES,  # before /workflows/{wf} and /executions/{id}
        *routes_audit.ROUTES,  # before /executions/{id}
        *routes_workflows.ROUTES,
        *routes_export.ROUTES,  # before /executions/{id}
        *routes_live.ROUTES,  # before /executions/{id} takes /executions/live
        *routes_reruns.ROUTES,  # before /executions/{id} takes /executions/rerun
        *routes_executions.ROUTES,
        *routes_signals.ROUTES,
        *routes_signing.ROUTES,
        *routes_credentials.ROUTES,
        *routes_variables.ROUTES,
        *routes_hooks.ROUTES,
        *routes_checkpoints.ROUTES,
    ]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time requests, labelled by the route's canonical path (bounded cardinality)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "<unmatched>"
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)


async def _close_hub(app: web.Application) -> None:
    await app[HUB].close()


def make_app(container: Container, roles: Sequence[str] = ("gateway",)) -> web.Application:
    """The gateway application. `roles` are the roles this process runs (for `/ready`)."""
    app = web.Application(
        client_max_size=container.settings.max_body_bytes,
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            deadline_middleware,
        ],
    )
    app.on_response_prepare.append(answer_request_id)
    app[CONTAINER] = container
    app[KEY_USAGE] = KeyUsage()
    app[ADMISSION] = Admission(container.pool, container.settings.max_queued_per_workspace)
    app[routes_export.EXPORT_SLOTS] = routes_export.ExportSlots(container.settings.max_exports)
    # Live updates (SSE): follows the log only while a client streams; its streams end when
    # the application shuts down (before aiohttp waits for the handlers to finish).
    app[HUB] = Hub(container.settings, container.redis, container.pool, container.store)
    app.on_shutdown.append(_close_hub)
    routes = api_routes()
    add_routes(app, routes)
    ops.add_ops_routes(app, container, roles)
    add_openapi_route(app, [*routes, *ops.ROUTES])
    return app
