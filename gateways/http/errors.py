"""Error answers of the HTTP API and request-body validation.

`ApiError` is what route code raises; `error_middleware` turns it, and every other exception a
handler lets escape, into `{"error": {"code", "message", "details"}}` with the fitting status:
a failure of PostgreSQL or Redis (`infra.outages.is_unavailable`) is 503 `unavailable` with
`Retry-After`, never a 500.
`read_json`, `build` and `parse_uuid` validate what a request carries. Imported by the modules of
`gateways.http` only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ValidationError

from commands.errors import (
    CommandConflict,
    DefinitionInvalid,
    DomainError,
    EventTooLarge,
    Forbidden,
    NotFound,
)
from domain.json_limits import too_deep
from domain.limits import DEFAULT_LIMITS
from gateways.http.context import CONTAINER
from infra.logging import get_logger
from infra.outages import OUTAGES, is_unavailable

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
# Bodies larger than this are parsed and checked in a thread.
THREAD_PARSE_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# DomainError codes that mean "the request names something invalid" rather than a conflict.
DOMAIN_STATUS: dict[str, int] = {
    "unknown_version": 422,
    "invalid_role": 422,
    "not_found": 404,
    # signals and approvals (domain.waits)
    "invalid_signal_name": 422,
    "payload_too_large": 413,
    "too_deep": 422,
    "not_an_approver": 403,
    "self_approval_refused": 403,
}

# Retry-After of a 503 `unavailable` (a dependency is away, or the request deadline passed).
UNAVAILABLE_RETRY_AFTER_S = 2

# Codes for aiohttp's own HTTP exceptions (raised by the router or while reading a request).
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An error answer: HTTP status, a snake_case code, a message for people, details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return web.json_response(body, status=status, headers=headers)


def invalid(path: str, message: str, code: str = "invalid_request") -> ApiError:
    """A 422 about one field of the request."""
    return ApiError(422, code, "the request is invalid", [{"path": path, "message": message}])


# ---------------------------------------------------------------- request validation


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """One `{path, message}` per pydantic error, paths like `email`, `input.x`, `items[0]`."""
    return [
        {"path": _location(tuple(err["loc"])), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def request_invalid(exc: ValidationError) -> ApiError:
    return ApiError(422, "invalid_request", "the request is invalid", validation_details(exc))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request body parsed as JSON, whatever the Content-Type says.

    413 `payload_too_large` past the body limit (checked on Content-Length first, then while
    reading); 400 `malformed_json` for bytes that are not strict JSON (NaN/Infinity refused).
    An empty body is None when `optional`, else 400. 422 naming the path for a NUL character,
    and 422 `too_deep` naming the first value nested deeper than `max_json_depth` (path ""
    when the document is too deep for the parser itself).
    """
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    if not raw.strip():
        if optional:
            return None
        raise ApiError(400, "malformed_json", "the request body must be a JSON document")
    max_depth = _max_json_depth(request)
    if len(raw) > THREAD_PARSE_BYTES:
        # Checking a large document walks it in Python: let the loop run meanwhile (the C
        # parser itself holds the interpreter, ~30 ms per MiB).
        return await asyncio.to_thread(_parse_checked, raw, max_depth)
    return _parse_checked(raw, max_depth)


def _parse_checked(raw: bytes, max_depth: int) -> Any:
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise nested_too_deep("", max_depth) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from exc
    where = nul_path(document)
    if where is not None:
        raise invalid(where, "NUL characters (\\u0000) are not accepted")
    where = too_deep(document, max_depth)
    if where is not None:
        raise nested_too_deep(where, max_depth)
    return document


def _max_json_depth(request: web.Request) -> int:
    """`LINKFLOW_MAX_JSON_DEPTH` of the application's settings (the default without them)."""
    container = request.app.get(CONTAINER)
    return container.settings.max_json_depth if container else DEFAULT_LIMITS.max_json_depth


def nested_too_deep(path: str, max_depth: int) -> ApiError:
    """The 422 for a body nested deeper than `max_depth` levels (`LINKFLOW_MAX_JSON_DEPTH`)."""
    return ApiError(
        422,
        "too_deep",
        "the request body is nested too deeply",
        [{"path": path, "message": f"nested deeper than {max_depth} levels"}],
    )


def nul_path(document: Any) -> str | None:
    """The path of the first string or key holding a NUL character, else None. PostgreSQL text
    and jsonb cannot store NUL: accepted, such a value would stop the projector."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return child
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body exceeds {limit} bytes")


def build(model: type[M], body: Any, **server: Any) -> M:
    """Validate a request body (a JSON object, or None for "no body") into `model`, with the
    fields the gateway fills itself (`server`: ids from the path and the token, headers).
    A client may not set those: a body naming one is refused like any unknown field.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise invalid("", "the request body must be a JSON object")
    clashes = sorted(set(body) & set(server))
    if clashes:
        raise ApiError(
            422,
            "invalid_request",
            "the request is invalid",
            [{"path": name, "message": "Extra inputs are not permitted"} for name in clashes],
        )
    try:
        return model.model_validate({**body, **server})
    except ValidationError as exc:
        raise request_invalid(exc) from None


def parse_uuid(value: str, field: str) -> UUID:
    """An id from a path; a malformed one names nothing, so it is 404 `<field> not found`."""
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise ApiError(404, "not_found", f"{field} not found") from None


# ---------------------------------------------------------------- the middleware


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "<unmatched>"


def map_exception(request: web.Request, exc: Exception) -> web.Response:
    """The error answer for an exception a handler let escape."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, DefinitionInvalid):
        details = [{"path": p.path, "message": p.message} for p in exc.problems]
        message = "the workflow definition is invalid"
        return error_response(422, "invalid_definition", message, details)
    if isinstance(exc, ValidationError):
        return request_invalid(exc).response()
    if isinstance(exc, json.JSONDecodeError):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", f"{exc.kind} not found")
    if isinstance(exc, Forbidden):
        return error_response(403, "forbidden", str(exc))
    if isinstance(exc, DomainError):
        return error_response(DOMAIN_STATUS.get(exc.code, 409), exc.code, str(exc))
    if isinstance(exc, EventTooLarge):
        message = f"the request would store an event larger than {exc.limit} bytes"
        return error_response(413, "event_too_large", message)
    if isinstance(exc, CommandConflict):
        return error_response(
            503, "busy", "the server is busy, retry shortly", headers={"Retry-After": "1"}
        )
    if is_unavailable(exc):
        # PostgreSQL or Redis away (or not answering in time): logged once per outage.
        OUTAGES.report(exc, where=f"{request.method} {_route_of(request)}")
        return error_response(
            503,
            "unavailable",
            "a service this request needs is unavailable; retry shortly",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.client_max_size).response()
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        if exc.status == 404:
            message = "no such route"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed here"
        else:
            message = exc.reason
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, message, headers=headers)
    log.exception(
        "unhandled_error",
        extra={"fields": {"method": request.method, "route": _route_of(request)}},
    )
    return error_response(500, "internal", "internal server error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return map_exception(request, exc)
    except Exception as exc:
        return map_exception(request, exc)
