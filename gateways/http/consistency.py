"""Read-your-writes for the visibility API: a GET given `?min_position=N` waits until the
projector has applied position N (every command answer carries its `position`), polling with a
deadline; past it the answer is 503 `projection_lag` (the request deadline is extended by that
wait, see `gateways.http.deadline`). A read of one object by id never answers 404 for an object
that exists: when the read model does not have it, the write model is asked for the object's
latest position in the workspace, and the read waits for the projector to reach it
(`answer_read(by_id=...)`). Imported by the route modules of `gateways.http`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from commands import lookups
from domain.base import TenantAggregate
from gateways.http.context import container, respond
from gateways.http.deadline import extend_deadline
from gateways.http.errors import ApiError, invalid
from gateways.http.routing import Param
from infra.eventlog import head_position
from projections import queries

POLL_INTERVAL_S = 0.01
WAIT_DEADLINE_S = 5.0

MIN_POSITION = Param(
    "min_position",
    {"type": "integer", "minimum": 0},
    "wait (up to 5 s) until the read models include this position (from a command's answer)",
)


def min_position(request: web.Request) -> int:
    """`?min_position=N` (an integer ≥ 0; 0 when absent), else 422."""
    raw = request.query.get("min_position")
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise invalid("min_position", "must be an integer ≥ 0") from None
    if value < 0:
        raise invalid("min_position", "must be an integer ≥ 0")
    return value


async def wait_for_projection(request: web.Request, position: int) -> None:
    """Return once the projector's position is ≥ `position`; 503 `projection_lag` past 5 s.

    A connection is taken from the pool for each poll only, so waiting readers never starve the
    projector (which may share the pool) of connections.
    """
    if position <= 0:
        return
    extend_deadline(request, WAIT_DEADLINE_S)  # its own 503 `projection_lag` comes first
    pool = container(request).pool
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_DEADLINE_S
    first = True
    while True:
        async with pool.connection() as conn:
            if await queries.projector_position(conn) >= position:
                return
            if first and position > await head_position(conn):
                # No command ever answered this position: waiting could only time out.
                raise invalid("min_position", "is past the end of the event log")
        first = False
        if loop.time() >= deadline:
            raise ApiError(
                503,
                "projection_lag",
                f"the read models have not reached position {position} yet; retry shortly",
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def read_your_writes(request: web.Request) -> None:
    """Validate `?min_position` and wait for it."""
    await wait_for_projection(request, min_position(request))


async def answer_read(
    request: web.Request,
    query: Callable[..., Awaitable[Any]],
    *args: Any,
    missing: str | None = None,
    by_id: tuple[type[TenantAggregate], UUID, UUID] | None = None,
    **kwargs: Any,
) -> web.Response:
    """Run one visibility query after read-your-writes; an empty result of a query for one thing
    (`missing` names it) is 404 — unless `by_id` (kind, workspace, aggregate id) names an object
    the write model has of that kind in that workspace: then the query runs again once the
    projector has reached the object's latest position."""
    await read_your_writes(request)
    c = container(request)
    async with c.pool.connection() as conn:
        result = await query(conn, *args, **kwargs)
    if missing and not result and by_id is not None:
        position = await c.bus.run(lookups.position_in_workspace, *by_id)
        if position:
            await wait_for_projection(request, position)
            async with c.pool.connection() as conn:
                result = await query(conn, *args, **kwargs)
    if missing and not result:
        raise ApiError(404, "not_found", f"{missing} not found")
    return respond(result)
