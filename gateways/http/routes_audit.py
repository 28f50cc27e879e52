"""Audit routes (issue 15): the workspace event log (`GET …/events`, `projections.audit_log`)
and time travel (`GET …/executions/{id}/state` and `…/workflows/{wf}/state`,
`projections.states`). Reading them needs `Action.READ_AUDIT` (owner, admin, auditor; members
and viewers 403; another workspace 404). Bad parameters are 422 naming them. `ROUTES` is
registered by `app.api_routes` before the execution routes. Imported by `gateways.http.app`.
"""

from __future__ import annotations

import asyncio
import re
from uuid import UUID

from aiohttp import web

from domain.roles import Action
from gateways.http.auth import workspace_access
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, parse_uuid
from gateways.http.routing import Param, Route
from projections import audit_log, states
from projections.audit_log import DEFAULT_LIMIT, EVENT_TOPICS, MAX_LIMIT, LogFilter

WS = "/api/v1/workspaces/{ws}"
MAX_POSITION = 2**63 - 1
_INTEGER = re.compile(r"[0-9]{1,19}")

Problems = list[dict[str, str]]


def _refuse(problems: Problems) -> None:
    if problems:
        raise ApiError(422, "invalid_request", "the request is invalid", problems)


def _integer(
    request: web.Request, name: str, problems: Problems, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
        problems.append({"path": name, "message": f"must be an integer from {low} to {high}"})
        return None
    return int(raw)


def _uuid(request: web.Request, name: str, problems: Problems) -> UUID | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError:
        problems.append({"path": name, "message": "must be a UUID"})
        return None


def _types(request: web.Request, problems: Problems) -> list[str]:
    raw = request.query.get("types")
    if raw is None:
        return []
    names = [name.strip() for name in raw.split(",")]
    unknown = [name for name in names if name not in EVENT_TOPICS]
    if unknown:
        shown = unknown[0][:100]
        problems.append({"path": "types", "message": f"{shown!r} is not an event type"})
    return names


def log_filter(request: web.Request) -> LogFilter:
    """The page the query asks for; 422 naming each bad parameter."""
    problems: Problems = []
    after = _integer(request, "after", problems, 0, MAX_POSITION)
    limit = _integer(request, "limit", problems, 1, MAX_LIMIT)
    types = _types(request, problems)
    aggregate_id = _uuid(request, "aggregate_id", problems)
    actor_id = _uuid(request, "actor_id", problems)
    _refuse(problems)
    return LogFilter(
        after=after or 0,
        limit=limit or DEFAULT_LIMIT,
        types=types,
        aggregate_id=aggregate_id,
        actor_id=None if actor_id is None else str(actor_id),
    )


async def workspace_events(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ_AUDIT)
    f = log_filter(request)
    c = container(request)
    async with c.pool.connection() as conn:
        rows, head = await audit_log.read_page(conn, ws, f)
    body = await asyncio.to_thread(audit_log.page_body, c.store, rows, head, f)
    return web.Response(body=body, content_type="application/json")


def _at_version(request: web.Request, kind: str) -> int | None:
    problems: Problems = []
    at_version = _integer(request, "at_version", problems, 1, MAX_POSITION)
    if "at_version" in request.query and at_version is None:
        problems[-1]["message"] = f"must be a version of the {kind} (1 or more)"
    _refuse(problems)
    return at_version


async def execution_state(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ_AUDIT)
    execution_id = parse_uuid(request.match_info["id"], "execution")
    at_version = _at_version(request, "execution")
    c = container(request)
    async with c.pool.connection() as conn:
        rows = await states.execution_events(conn, ws, execution_id)
    if rows is None:
        raise ApiError(404, "not_found", "execution not found")
    try:
        answer = await asyncio.to_thread(
            states.execution_at, c.store, rows, execution_id, at_version
        )
    except states.VersionOutOfRange as exc:
        _refuse([{"path": "at_version", "message": str(exc)}])
    return respond(answer)


async def workflow_state(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ_AUDIT)
    workflow_id = parse_uuid(request.match_info["wf"], "workflow")
    at_version = _at_version(request, "workflow")
    c = container(request)
    async with c.pool.connection() as conn:
        rows = await states.workflow_events(conn, ws, workflow_id)
    if rows is None:
        raise ApiError(404, "not_found", "workflow not found")
    try:
        answer = await asyncio.to_thread(states.workflow_at, c.store, rows, workflow_id, at_version)
    except states.VersionOutOfRange as exc:
        _refuse([{"path": "at_version", "message": str(exc)}])
    return respond(answer)


ROUTES: list[Route] = [
    Route(
        "GET",
        f"{WS}/events",
        workspace_events,
        "The workspace's event log by position (who caused each event; credential data and"
        " key hashes left out); owner, admin or auditor",
        params=(
            Param("after", {"type": "integer", "minimum": 0}, "events after this position"),
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                f"events per page (default {DEFAULT_LIMIT})",
            ),
            Param("types", {"type": "string"}, "comma-separated event type names"),
            Param("aggregate_id", {"type": "string", "format": "uuid"}, "one aggregate's"),
            Param(
                "actor_id",
                {"type": "string", "format": "uuid"},
                "the actor's id (a webhook's or schedule's: the workflow id)",
            ),
        ),
        tag="audit",
        extra_responses={403: "Not an owner, admin or auditor", 422: "A bad parameter"},
    ),
    Route(
        "GET",
        f"{WS}/executions/{{id}}/state",
        execution_state,
        "The execution as GET …/executions/{id} would have shown it right after its event"
        " at_version (default: the last); owner, admin or auditor",
        params=(Param("at_version", {"type": "integer", "minimum": 1}, "an event's version"),),
        tag="audit",
        extra_responses={403: "Not an owner, admin or auditor", 422: "at_version out of range"},
    ),
    Route(
        "GET",
        f"{WS}/workflows/{{wf}}/state",
        workflow_state,
        "The workflow as GET …/workflows/{wf} would have shown it right after its event"
        " at_version (default: the last); owner, admin or auditor",
        params=(Param("at_version", {"type": "integer", "minimum": 1}, "an event's version"),),
        tag="audit",
        extra_responses={403: "Not an owner, admin or auditor", 422: "at_version out of range"},
    ),
]
