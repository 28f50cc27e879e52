"""The server-side deadline of every request: a handler still running after
`LINKFLOW_REQUEST_DEADLINE_S` (default 5 s) is cancelled and the request answered 503
`unavailable` with `Retry-After`, so that no client waits out an outage of PostgreSQL or Redis.

Such an answer means the outcome is unknown: a command may still have been recorded (its thread
is not stopped). The client retries; a start retried with the same `Idempotency-Key` answers the
execution the first attempt created, if it did.

Routes that wait on purpose ask for more time before they wait: `extend_deadline(request, s)`
gives the request `s` seconds more plus a whole deadline for what follows (the `?min_position`
read-your-writes wait, a webhook answering on completion), so their own answers (503
`projection_lag`, 202 still running) come first. A streamed answer (an export) keeps the deadline
until its first byte, then `lift_deadline` removes it: it runs as long as its client reads.
Imported by the modules of `gateways.http`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateways.http.context import container
from gateways.http.errors import UNAVAILABLE_RETRY_AFTER_S, ApiError, Handler

DEADLINE: web.RequestKey[asyncio.Timeout] = web.RequestKey("linkflow_deadline", asyncio.Timeout)


def unavailable(message: str) -> ApiError:
    """503 `unavailable` with Retry-After: a dependency is away or the deadline passed."""
    return ApiError(
        503, "unavailable", message, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    )


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = container(request).settings.request_deadline_s
    try:
        async with asyncio.timeout(limit) as deadline:
            request[DEADLINE] = deadline
            return await handler(request)
    except TimeoutError:
        if not deadline.expired():
            raise  # the handler's own (answered like any other error)
        raise unavailable(
            "the request did not complete in time; its outcome is unknown: retry it (a start"
            " with the same Idempotency-Key answers the execution it may have created)"
        ) from None


def extend_deadline(request: web.Request, wait_s: float) -> None:
    """Let the request wait `wait_s` seconds from now, then still have a whole deadline."""
    deadline = request.get(DEADLINE)
    if deadline is None:
        return
    when = deadline.when()
    extended = asyncio.get_running_loop().time() + wait_s
    extended += container(request).settings.request_deadline_s
    if when is not None and extended > when:
        deadline.reschedule(extended)


def lift_deadline(request: web.Request) -> None:
    """No deadline for the rest of the request: its streamed answer has begun (within the
    deadline), and a cancellation now could only cut it (the stream bounds itself)."""
    deadline = request.get(DEADLINE)
    if deadline is not None:
        deadline.reschedule(None)
