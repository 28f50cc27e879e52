"""Inbound webhooks: `/api/v1/hooks/{token}` starts the active workflow whose webhook trigger owns
`token`, with `input = {method, path, query, headers, body}`.

The token is resolved from the event store (`WebhookIndex`), not a read model, so a workflow
answers as soon as it is activated and stops as soon as it is deactivated. Unknown tokens and
archived, inactive or non-webhook workflows all answer the same 404. A method the trigger does
not list is 405. The trigger's `auth` names a workspace credential: this gateway opens that one
credential, and only to check the request against it (`header`, `basic`, `bearer`, or `hmac`:
LinkFlow signature headers over the raw body, 300 s window). A signed request starts at most one
execution: (a digest of) its signature is the start's idempotency key, and a replay is 409
`replayed`. Secrets never reach the recorded input: `Authorization`, cookies, the auth header
and the signature headers are left out. `ROUTES` is the table `app.make_app` registers and
`openapi` documents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from commands import lookups
from commands import models as m
from commands.errors import DomainError, NotFound
from commands.handlers import ExecutionAnswer
from domain.credential import Credential
from domain.definition import WebhookAuth
from domain.json_limits import too_deep
from domain.statuses import ExecutionStatus
from domain.webhook import HOOK_PATH
from gateways.bootstrap import Container
from gateways.http.admission import ADMISSION, admit
from gateways.http.context import container, respond
from gateways.http.deadline import extend_deadline
from gateways.http.errors import ApiError, build, nul_path, too_large
from gateways.http.routing import Handler, Param, Route
from infra.crypto import SealedValueInvalid
from infra.logging import get_logger
from infra.origin import current_origin, webhook_actor
from infra.outages import OUTAGES, is_unavailable
from infra.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

log = get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_TOKEN_LENGTH = 128
# Never recorded in an execution's input (they carry secrets), whatever the auth mode.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        SIGNATURE_HEADER.lower(),
        TIMESTAMP_HEADER.lower(),
    }
)
_FIRST_POLL_S = 0.01
_MAX_POLL_S = 0.25


# ---------------------------------------------------------------- pure parts


def recorded_headers(
    headers: Iterable[tuple[str, str]], auth: WebhookAuth | None
) -> dict[str, str]:
    """The request headers as recorded in the input: names lower-cased, repeats joined with
    ", ", and every header that carries a secret (SECRET_HEADERS and the auth header) left out."""
    hidden = SECRET_HEADERS | ({auth.name.lower()} if auth and auth.name else set())
    recorded: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in hidden:
            continue
        recorded[key] = f"{recorded[key]}, {value}" if key in recorded else value
    return recorded


def _text(value: str) -> str:
    """NUL (from a percent-encoded %00) replaced: PostgreSQL text cannot store it."""
    return value.replace("\x00", "\ufffd")


def query_values(items: Iterable[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Query parameters: one value as a string, a repeated parameter as a list of strings."""
    values: dict[str, str | list[str]] = {}
    for raw_name, raw_value in items:
        name, value = _text(raw_name), _text(raw_value)
        previous = values.get(name)
        if previous is None:
            values[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            values[name] = [previous, value]
    return values


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class BodyTooDeep(ValueError):
    """A JSON body nested deeper than the limit; `path` names the first value too deep
    (`body`, `body.a[3]`…)."""

    def __init__(self, path: str, max_depth: int) -> None:
        super().__init__(f"nested deeper than {max_depth} levels")
        self.path = path


def _under_body(path: str) -> str:
    if not path:
        return "body"
    return f"body{path}" if path.startswith("[") else f"body.{path}"


def parse_body(raw: bytes, content_type: str, max_depth: int = 64) -> Any:
    """The body as recorded: None when empty, parsed JSON when the content type is JSON
    (ValueError when it is not valid JSON, or holds a NUL character, which PostgreSQL's jsonb
    in the read models cannot store; BodyTooDeep past `max_depth` levels of nesting),
    otherwise text (undecodable bytes and NUL replaced)."""
    if not raw:
        return None
    if is_json(content_type):
        try:
            document = json.loads(raw, parse_constant=_no_constant)
        except RecursionError:
            raise BodyTooDeep("body", max_depth) from None
        if nul_path(document) is not None:
            raise ValueError("NUL characters (\\u0000) are not accepted")
        where = too_deep(document, max_depth)
        if where is not None:
            raise BodyTooDeep(_under_body(where), max_depth)
        return document
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def replay_key(signature: str) -> str:
    """The idempotency key of a signed request: a digest of its signature (so that the
    signature itself is not recorded in the execution's events)."""
    digest = hashlib.sha256(signature.strip().lower().encode()).hexdigest()
    return f"hmac:{digest}"


def _same(given: str | None, expected: Any) -> bool:
    """Constant-time equality; an expected value that is not a non-empty string never matches."""
    if given is None or not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _scheme_value(authorization: str | None, scheme: str) -> str | None:
    if not authorization:
        return None
    given, _, value = authorization.strip().partition(" ")
    return value.strip() if given.lower() == scheme and value.strip() else None


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(username, password) of an `Authorization: Basic …` header, or None."""
    encoded = _scheme_value(authorization, "basic")
    if encoded is None:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def auth_problem(
    auth: WebhookAuth,
    secret: Mapping[str, Any],
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> dict[str, str] | None:
    """None when the request proves itself with the credential's data `secret`; otherwise a
    `{path, message}` saying which header is missing or wrong (never anything about the secret).
    """
    if auth.type == "hmac":
        expected = secret.get("secret")
        if not isinstance(expected, str) or not expected:
            return {"path": "headers", "message": "the signature cannot be checked"}
        reason = verify(
            expected, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), body, now
        )
        return {"path": "headers", "message": reason} if reason else None
    if auth.type == "basic":
        pair = basic_credentials(headers.get("Authorization"))
        username, password = pair if pair else (None, None)
        # both compared, always: the time taken does not tell which one was wrong
        ok = _same(username, secret.get("username")) & _same(password, secret.get("password"))
        path = "headers.Authorization"
    elif auth.type == "bearer":
        ok = _same(_scheme_value(headers.get("Authorization"), "bearer"), secret.get("secret"))
        path = "headers.Authorization"
    else:
        assert auth.name is not None  # WebhookAuth requires it for header auth
        ok = _same(headers.get(auth.name), secret.get("secret"))
        path = f"headers.{auth.name}"
    return None if ok else {"path": path, "message": "missing or wrong"}


# ---------------------------------------------------------------- the route


def _unknown() -> ApiError:
    return ApiError(404, "not_found", "webhook not found")


def _replayed() -> ApiError:
    return ApiError(409, "replayed", "this signed request was already received")


async def _read_body(request: web.Request) -> bytes:
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    return await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size


async def _authenticate(
    request: web.Request, target: lookups.WebhookTarget, auth: WebhookAuth, raw: bytes
) -> None:
    """Check the request against the trigger's own credential (opened here for that only)."""
    c = container(request)
    sealed = await c.bus.run(lookups.sealed_credential, str(target.workspace_id), auth.credential)
    secret: Any = {}
    if sealed is None:
        log.warning(
            "webhook_credential_missing",
            extra={"fields": {"workflow_id": str(target.workflow_id)}},
        )
    else:
        try:
            secret = c.box.open(sealed.sealed_data, Credential.sealing_context(sealed.id))
        except SealedValueInvalid:
            log.warning(
                "webhook_credential_unreadable",
                extra={"fields": {"workflow_id": str(target.workflow_id)}},
            )
    problem = auth_problem(
        auth, secret if isinstance(secret, dict) else {}, request.headers, raw, datetime.now(UTC)
    )
    if problem is not None:
        challenge = {"basic": 'Basic realm="linkflow"', "bearer": "Bearer"}.get(auth.type)
        raise ApiError(
            401,
            "unauthenticated",
            "the webhook request is not authenticated",
            [problem],
            headers={"WWW-Authenticate": challenge} if challenge else None,
        )


async def _outcome(c: Container, execution_id: UUID) -> dict[str, Any] | None:
    """The execution's status, output and error once it is closed; None if it is still running
    after `webhook_wait_s` (polls the write model with a growing interval until the deadline),
    or if PostgreSQL cannot tell (the execution was started: the caller answers 202 with its
    id rather than 503)."""
    deadline = time.monotonic() + c.settings.webhook_wait_s
    interval = _FIRST_POLL_S
    while True:
        try:
            outcome = await c.bus.run(lookups.execution_outcome, execution_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            OUTAGES.report(exc, where="webhook outcome")
            return None
        remaining = deadline - time.monotonic()
        if outcome["status"] not in (ExecutionStatus.RUNNING, ExecutionStatus.QUEUED):
            return outcome
        if remaining <= 0:
            return None
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, _MAX_POLL_S)


async def receive_hook(request: web.Request) -> web.Response:
    c = container(request)
    token = request.match_info["token"]
    target = None
    if len(token) <= MAX_TOKEN_LENGTH:
        target = await c.bus.run(lookups.webhook_target, token)
    if target is None:
        raise _unknown()
    allowed = target.trigger.allowed_methods
    if request.method not in allowed:
        raise ApiError(
            405,
            "method_not_allowed",
            f"this webhook accepts {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
    raw = await _read_body(request)
    auth = target.trigger.auth
    if auth is not None:
        await _authenticate(request, target, auth, raw)
    try:
        body = parse_body(raw, request.content_type, c.settings.max_json_depth)
    except BodyTooDeep as exc:
        raise ApiError(
            422,
            "too_deep",
            "the request body is nested too deeply",
            [{"path": exc.path, "message": str(exc)}],
        ) from None
    except ValueError as exc:
        raise ApiError(
            400,
            "malformed_json",
            "the request body is not valid JSON (its Content-Type says it is)",
            [{"path": "body", "message": str(exc)}],
        ) from None
    replay_guarded = auth is not None and auth.type == "hmac"
    key = (
        replay_key(request.headers[SIGNATURE_HEADER])
        if replay_guarded
        else request.headers.get(IDEMPOTENCY_HEADER)
    )
    cmd = build(
        m.StartExecution,
        None,
        workspace_id=target.workspace_id,
        workflow_id=target.workflow_id,
        input={
            "method": request.method,
            "path": _text(request.path),
            "query": query_values(request.query.items()),
            "headers": recorded_headers(request.headers.items(), auth),
            "body": body,
        },
        idempotency_key=key,
        trigger="webhook",
    )
    await admit(request, cmd)
    try:
        origin = current_origin().with_actor(webhook_actor(target.workflow_id))
        result = await c.bus.execute(cmd, origin=origin)
    except NotFound:
        raise _unknown() from None
    except DomainError as exc:
        if exc.code in ("trigger_inactive", "archived"):
            raise _unknown() from None  # deactivated since it was resolved
        if replay_guarded and exc.code == "idempotency_key_reused":
            raise _replayed() from None
        raise
    assert isinstance(result, ExecutionAnswer)
    repeated = result.repeated
    if repeated and replay_guarded:
        raise _replayed()
    request.app[ADMISSION].started(target.workspace_id, result.position)
    execution_id = str(result.execution_id)
    headers = {"Idempotent-Replayed": "true"} if repeated else None
    if target.trigger.respond == "on_completion":
        extend_deadline(request, c.settings.webhook_wait_s)  # its own 202 comes first
        outcome = await _outcome(c, result.execution_id)
        if outcome is not None:
            return respond({"execution_id": execution_id, **outcome}, headers=headers)
    answer = {
        "execution_id": execution_id,
        "status": result.status,
        "position": result.position,
    }
    return respond(answer, status=202, headers=headers)


# One handler per method: OpenAPI names each operation after its handler.
async def hook_get(request: web.Request) -> web.Response:
    return await receive_hook(request)


async def hook_post(request: web.Request) -> web.Response:
    return await receive_hook(request)


async def hook_put(request: web.Request) -> web.Response:
    return await receive_hook(request)


async def hook_patch(request: web.Request) -> web.Response:
    return await receive_hook(request)


async def hook_delete(request: web.Request) -> web.Response:
    return await receive_hook(request)


_BODY_SCHEMA: dict[str, Any] = {
    "description": (
        "Any body (at most LINKFLOW_MAX_BODY_BYTES): parsed as JSON when its Content-Type is"
        " JSON (invalid JSON is 400, nested deeper than LINKFLOW_MAX_JSON_DEPTH is 422),"
        " otherwise recorded as text; it becomes `input.body`."
    )
}
_RESPONSES = {
    200: "respond: on_completion and the execution closed in time: "
    "{execution_id, status, output, error}",
    401: "unauthenticated: the trigger's auth (header, basic, bearer, hmac) is missing or wrong",
    404: "not_found: unknown token, or the workflow is archived, inactive or not a webhook",
    405: "method_not_allowed: not one of the trigger's methods (see Allow)",
    409: "replayed: this hmac-signed request already started an execution",
    413: "payload_too_large",
    422: "too_deep: a JSON body nested deeper than LINKFLOW_MAX_JSON_DEPTH (path from `body`)",
    429: "too_many_executions: the workspace has its fill of open executions (Retry-After)",
}


def _route(method: str, handler: Handler) -> Route:
    return Route(
        method,
        HOOK_PATH,
        handler,
        "Start the workflow whose active webhook trigger owns the token:"
        " 202 {execution_id, status, position}",
        status=202,
        body=None if method == "GET" else _BODY_SCHEMA,
        body_required=False,
        params=(
            Param(
                IDEMPOTENCY_HEADER,
                {"type": "string", "minLength": 1, "maxLength": 255},
                "a repeat with the same key answers the same execution (hmac: the signature is"
                " the key)",
                location="header",
            ),
        ),
        auth=False,
        tag="webhooks",
        extra_responses=_RESPONSES,
    )


ROUTES: list[Route] = [
    _route("GET", hook_get),
    _route("POST", hook_post),
    _route("PUT", hook_put),
    _route("PATCH", hook_patch),
    _route("DELETE", hook_delete),
]
