"""Talking to a running execution: send it a signal (logged in, or without login through a
signal URL, `infra.signal_urls`), decide one of its approval nodes (`commands.signals`).
`ROUTES` is the table `app.make_app` registers and `openapi` documents. Imported by
`gateways.http.app`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from commands.handlers import Result
from commands.models import Command
from commands.signals import DecideApproval, SendSignal
from domain.base import DomainError
from domain.roles import Action
from gateways.http.auth import ROLE_KEY, workspace_access
from gateways.http.context import container, respond
from gateways.http.errors import DOMAIN_STATUS, ApiError, build, parse_uuid, read_json
from gateways.http.routes_executions import IDEMPOTENCY_HEADER, idempotency_param
from gateways.http.routing import Route
from infra.origin import Origin, current_origin, signal_url_actor
from infra.signal_urls import SignalUrls, TokenInvalid

WS = "/api/v1/workspaces/{ws}"
# Refusals of a signal's payload: answered naming the field.
_PAYLOAD_CODES = frozenset({"payload_too_large", "too_deep"})


def _execution_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["id"], "execution")


async def _execute(
    request: web.Request, cmd: Command, origin: Origin | None = None
) -> web.Response:
    try:
        result = await container(request).bus.execute(cmd, origin=origin)
    except DomainError as exc:
        if exc.code not in _PAYLOAD_CODES:
            raise
        status = DOMAIN_STATUS[exc.code]
        details = [{"path": "payload", "message": str(exc)}]
        raise ApiError(status, exc.code, str(exc), details) from None
    assert isinstance(result, Result)
    return respond({"position": result.position, **result.fields}, status=202)


async def send_signal(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.RUN_EXECUTIONS)
    execution_id = _execution_id(request)
    body = await read_json(request, optional=True)
    cmd = build(
        SendSignal,
        body,
        workspace_id=ws,
        execution_id=execution_id,
        name=request.match_info["name"],
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return await _execute(request, cmd)


async def signal_by_url(request: web.Request) -> web.Response:
    """No login: the token names the workspace, the execution and the signal, and expires."""
    settings = container(request).settings
    urls = SignalUrls(settings.secret_key, settings.public_url, settings.signal_url_ttl_s)
    try:
        target = urls.verify(request.match_info["token"], datetime.now(UTC))
    except TokenInvalid as exc:
        if exc.expired:
            raise ApiError(401, "signal_url_expired", str(exc)) from None
        raise ApiError(404, "not_found", "signal URL not found") from None
    body = await read_json(request, optional=True)
    cmd = build(
        SendSignal,
        body,
        workspace_id=target.workspace_id,
        execution_id=target.execution_id,
        name=target.name,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    origin = current_origin().with_actor(signal_url_actor(target.execution_id))
    return await _execute(request, cmd, origin)


async def decide_approval(request: web.Request) -> web.Response:
    # Any role but the auditor may ask; the node's `approvers.roles` decide (403
    # `not_an_approver`).
    ws = await workspace_access(request, Action.DECIDE_APPROVALS)
    execution_id = _execution_id(request)
    body = await read_json(request)
    cmd = build(
        DecideApproval,
        body,
        workspace_id=ws,
        execution_id=execution_id,
        node_id=request.match_info["node"],
        role=request[ROLE_KEY],
    )
    return await _execute(request, cmd)


ROUTES: list[Route] = [
    Route(
        "POST",
        WS + "/executions/{id}/signals/{name}",
        send_signal,
        "Send a signal to a running execution (kept until a wait_for_signal node takes it)",
        status=202,
        body=SendSignal,
        body_required=False,
        server_fields=("workspace_id", "execution_id", "name", "idempotency_key"),
        params=(idempotency_param("a repeat with the same key records nothing"),),
        extra_responses={
            409: "execution_closed: the execution is not running; too_many_signals: it keeps"
            " 1,000 signals no node has taken",
            413: "payload_too_large: the payload exceeds the output limit",
            422: "invalid_request: details name `name` (the signal's name) or `payload`",
        },
        tag="executions",
    ),
    Route(
        "POST",
        "/api/v1/signals/{token}",
        signal_by_url,
        "Send the signal a signal URL names ({{ execution.signal_url.<name> }}), without login",
        status=202,
        body=SendSignal,
        body_required=False,
        server_fields=("workspace_id", "execution_id", "name", "idempotency_key"),
        auth=False,
        params=(idempotency_param("a repeat with the same key records nothing"),),
        extra_responses={
            401: "signal_url_expired: the URL's time ran out (LINKFLOW_SIGNAL_URL_TTL_S)",
            404: "not_found: a malformed or forged token",
            409: "execution_closed: the execution is not running",
        },
        tag="executions",
    ),
    Route(
        "POST",
        WS + "/executions/{id}/approvals/{node}",
        decide_approval,
        "Approve or reject a waiting approval node",
        status=202,
        body=DecideApproval,
        server_fields=("workspace_id", "execution_id", "node_id", "role"),
        extra_responses={
            403: "not_an_approver / self_approval_refused",
            404: "not_found: no such execution, or no approval node of that id",
            409: "execution_closed / node_not_waiting",
        },
        tag="executions",
    ),
]
