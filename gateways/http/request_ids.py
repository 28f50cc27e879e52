"""Request ids: every request gets one, and every response says it (`X-Request-Id`).

The client's `X-Request-Id` is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`;
otherwise (absent, empty, too long, other characters) the gateway makes one (uuid4 hex). An
unusable id is replaced rather than refused: the header is tracing, and a webhook sender's
proxy may set one in a form of its own; a request must not fail for it. The id is:
- answered as `X-Request-Id` on every response, errors and streams too (`on_response_prepare`,
  so that a streamed response carries it before its first byte);
- the request's `infra.origin.Origin` request id (with the actor, once `gateways.http.auth`
  knows the caller), recorded beside every event the request causes;
- in each structured log line written while the request is served (`infra.logging`).

Imported by `gateways.http.app`.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from gateways.http.errors import Handler
from infra.origin import Origin, set_origin

HEADER = "X-Request-Id"
MAX_LENGTH = 128
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_KEY = web.RequestKey("request_id", str)


def usable(value: str | None) -> bool:
    """Whether a client's X-Request-Id is kept as it is."""
    return value is not None and _VALID.fullmatch(value) is not None


def request_id_for(value: str | None) -> str:
    """The request's id: the client's when usable, else a new one."""
    return value if value is not None and usable(value) else uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id and start its origin (the system, until the caller is known)."""
    request_id = request_id_for(request.headers.get(HEADER))
    request[REQUEST_ID_KEY] = request_id
    set_origin(Origin(None, request_id))  # this request's task only
    return await handler(request)


async def answer_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: say the request's id on its response."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[HEADER] = request_id
