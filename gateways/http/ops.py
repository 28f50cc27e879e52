"""Operations endpoints at the server root: `GET /health` (liveness: the process answers, 200
even while a dependency is away — restarting it would not help), `GET /ready` (readiness:
PostgreSQL and Redis answer and the positions of the event consumers this process runs exist;
503 otherwise, so a load balancer sends no traffic), `GET /metrics` (Prometheus). A failing
check counts as a failure of that dependency for `infra.outages`.
`add_ops_routes` serves them on the gateway's application and, in `gateways.roles`, on the small
application of a role without a gateway. Imported by `gateways.roles`, `gateways.http.app` and
`gateways.http.openapi`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateways.bootstrap import Container
from gateways.http.context import respond
from gateways.http.routing import Route, add_routes
from infra.outages import OUTAGES, POSTGRES, REDIS

# Roles whose progress is a row in `consumer_positions` (created when the role starts).
TRACKED_CONSUMERS = ("relay", "projector", "matching", "timers", "callbacks")
# Consumers that run inside another role's process (role -> its extra consumers).
INNER_CONSUMERS = {"timers": ("schedules",)}
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class OpsContext:
    container: Container
    roles: tuple[str, ...]

    @property
    def consumers(self) -> list[str]:
        roles = TRACKED_CONSUMERS if "all" in self.roles else self.roles
        names = [name for name in TRACKED_CONSUMERS if name in roles]
        return names + [inner for role in names for inner in INNER_CONSUMERS.get(role, ())]


OPS: web.AppKey[OpsContext] = web.AppKey("linkflow_ops", OpsContext)


async def health(request: web.Request) -> web.Response:
    return respond({"status": "ok", "roles": list(request.app[OPS].roles)})


async def _postgres(c: Container, consumers: list[str]) -> dict[str, str]:
    checks: dict[str, str] = {}
    async with c.pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
        await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
        if consumers:
            cur = await conn.execute(
                "SELECT consumer FROM consumer_positions WHERE consumer = ANY(%s)", (consumers,)
            )
            present = {cast(dict[str, Any], row)["consumer"] for row in await cur.fetchall()}
            for name in consumers:
                checks[f"consumer:{name}"] = "ok" if name in present else "missing"
    return checks


async def _redis(c: Container) -> str:
    await c.redis.ping()
    return "ok"


async def _postgres_checks(c: Container, consumers: list[str]) -> dict[str, str]:
    try:
        return await asyncio.wait_for(_postgres(c, consumers), CHECK_TIMEOUT_S + 1)
    except Exception as exc:
        OUTAGES.failed(POSTGRES, exc, where="/ready")
        return {"postgres": "unreachable"} | {f"consumer:{name}": "unknown" for name in consumers}


async def _redis_checks(c: Container) -> dict[str, str]:
    try:
        checks = {"redis": await asyncio.wait_for(_redis(c), CHECK_TIMEOUT_S)}
    except Exception as exc:
        OUTAGES.failed(REDIS, exc, where="/ready")
        return {"redis": "unreachable"}
    OUTAGES.ok(REDIS)
    return checks


async def ready(request: web.Request) -> web.Response:
    """503 while PostgreSQL or Redis does not answer (within 3 s: both are checked at once)."""
    ctx = request.app[OPS]
    postgres, redis = await asyncio.gather(
        _postgres_checks(ctx.container, ctx.consumers), _redis_checks(ctx.container)
    )
    checks = postgres | redis
    ok = all(value == "ok" for value in checks.values())
    return respond(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


ROUTES: list[Route] = [
    Route("GET", "/health", health, "Liveness: the process answers", auth=False, tag="operations"),
    Route(
        "GET",
        "/ready",
        ready,
        "Readiness: PostgreSQL, Redis and this process's consumers (503 when not ready)",
        auth=False,
        tag="operations",
        extra_responses={503: "not_ready, with the failing checks"},
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (text exposition format)",
        auth=False,
        tag="operations",
    ),
]


def add_ops_routes(app: web.Application, container: Container, roles: Sequence[str]) -> None:
    """Serve /health, /ready and /metrics on `app` for a process running `roles`."""
    app[OPS] = OpsContext(container, tuple(roles))
    add_routes(app, ROUTES)
