"""Execution routes: start (with an optional Idempotency-Key), list with filters (the `q`
filter language of `projections.query_language` among them) and cursor pagination, read one,
its event history, cancel. `ROUTES` is the table `app.make_app` registers
and `openapi` documents. Imported by `gateways.http.app` and `gateways.http.openapi`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from commands import models as m
from commands.handlers import ExecutionAnswer
from domain.execution import Execution
from domain.roles import Action
from domain.statuses import ExecutionStatus
from gateways.http.admission import ADMISSION, admit
from gateways.http.auth import execute_with_access, workspace_access
from gateways.http.consistency import MIN_POSITION, answer_read
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, build, parse_uuid, read_json
from gateways.http.routing import Param, Route
from projections import queries
from projections.query_language import (
    DEFAULT_ORDER,
    MAX_QUERY_LENGTH,
    ExecutionQuery,
    Order,
    QueryError,
    parse,
)

WS = "/api/v1/workspaces/{ws}"
STATUSES = tuple(ExecutionStatus)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_param(meaning: str) -> Param:
    """The optional `Idempotency-Key` header of a command route, `meaning` what a repeat does."""
    return Param(
        IDEMPOTENCY_HEADER,
        {"type": "string", "minLength": 1, "maxLength": 255},
        meaning,
        location="header",
    )


def _execution_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["id"], "execution")


def _location(ws: UUID, execution_id: str) -> str:
    return f"{WS.format(ws=ws)}/executions/{execution_id}"


async def start_execution(request: web.Request) -> web.Response:
    # The role check reads nothing from PostgreSQL once the workspace is held (the start's
    # save checks it); the body is read after it, so a stranger learns nothing from a 422.
    async def command(ws: UUID) -> m.StartExecution:
        wf = parse_uuid(request.match_info["wf"], "workflow")
        body = await read_json(request, optional=True)
        cmd = build(
            m.StartExecution,
            body,
            workspace_id=ws,
            workflow_id=wf,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            trigger="manual",
        )
        await admit(request, cmd)
        return cmd

    result = await execute_with_access(request, Action.RUN_EXECUTIONS, command)
    assert isinstance(result, ExecutionAnswer)
    ws = parse_uuid(request.match_info["ws"], "workspace")
    request.app[ADMISSION].started(ws, result.position)
    execution_id = str(result.execution_id)
    headers = {"Location": _location(ws, execution_id)}
    if result.repeated:
        headers["Idempotent-Replayed"] = "true"
    answer = {
        "execution_id": execution_id,
        "status": result.status,
        "position": result.position,
    }
    return respond(answer, status=202, headers=headers)


def parse_timestamp(raw: str) -> datetime:
    """ISO 8601; an unencoded `+hh:mm` offset arrives as ` hh:mm` and is repaired; naive = UTC."""
    if len(raw) > 19 and raw[-6] == " ":
        raw = raw[:-6] + "+" + raw[-5:]
    value = datetime.fromisoformat(raw)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filters(request: web.Request) -> dict[str, Any]:
    """The list filters from the query string: `matching_filters` (with the problem of `limit`
    listed after theirs), then a cursor that is not ours, or is of a list in another order,
    422 `invalid_cursor`."""
    query = request.query
    problems: list[dict[str, str]] = []
    limit = query.get("limit")
    if limit:
        try:
            if not 1 <= int(limit) <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            problems.append({"path": "limit", "message": f"must be an integer 1..{MAX_LIMIT}"})
    filters = matching_filters(request, problems)
    filters["limit"] = int(limit) if limit else DEFAULT_LIMIT
    cursor = query.get("cursor")
    if cursor:
        order = filters["q"].order if "q" in filters else DEFAULT_ORDER
        filters["cursor"] = _cursor(cursor, order)
    return filters


def matching_filters(
    request: web.Request, more_problems: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """Which executions match, from the query string, as `queries.list_statement` takes it:
    `status`, `workflow_id`, `started_after`, `started_before`, and the filter `q`. Their
    problems and `more_problems` (the caller's, about its own parameters) are answered at once
    as 422 `invalid_request`; then a malformed `q` is 422 `invalid_query`. Also used by
    `gateways.http.routes_export`."""
    query = request.query
    problems: list[dict[str, str]] = []
    filters: dict[str, Any] = {}
    status = query.get("status")
    if status:
        if status in STATUSES:
            filters["status"] = status
        else:
            problems.append({"path": "status", "message": f"must be one of {', '.join(STATUSES)}"})
    workflow_id = query.get("workflow_id")
    if workflow_id:
        try:
            filters["workflow_id"] = UUID(workflow_id)
        except ValueError:
            problems.append({"path": "workflow_id", "message": "must be a UUID"})
    for name in ("started_after", "started_before"):
        raw = query.get(name)
        if raw:
            try:
                filters[name] = parse_timestamp(raw)
            except ValueError:
                problems.append({"path": name, "message": "must be an ISO 8601 date-time"})
    problems += more_problems or []
    if problems:
        raise ApiError(422, "invalid_request", "the request is invalid", problems)
    q = query.get("q")
    if q:
        filters["q"] = parsed_query(q)
    return filters


def parsed_query(q: str) -> ExecutionQuery:
    """The filter `q`, else 422 `invalid_query` with the offset of the problem."""
    try:
        return parse(q)
    except QueryError as exc:
        detail = {"path": "q", "message": exc.message, "position": exc.position}
        raise ApiError(422, "invalid_query", "the filter q is invalid", [detail]) from None


def _order_by(order: Order) -> str:
    return f"{order.field.name} {'DESC' if order.descending else 'ASC'}"


def _cursor(raw: str, order: Order) -> queries.Cursor:
    """The cursor of a page listed in `order`, else 422 `invalid_cursor`."""
    try:
        cursor = queries.decode_cursor(raw)
    except ValueError:
        raise ApiError(
            422,
            "invalid_cursor",
            "the cursor is not one this API issued",
            [{"path": "cursor", "message": "not a valid cursor"}],
        ) from None
    if cursor.order != order:
        message = f"issued for ORDER BY {_order_by(cursor.order)}, not {_order_by(order)}"
        raise ApiError(
            422,
            "invalid_cursor",
            "the cursor belongs to a list in another order",
            [{"path": "cursor", "message": message}],
        )
    return cursor


async def list_executions(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    filters = _filters(request)
    return await answer_read(request, queries.list_executions, ws, **filters)


async def get_execution(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    execution_id = _execution_id(request)
    return await answer_read(
        request,
        queries.get_execution,
        ws,
        execution_id,
        missing="execution",
        by_id=(Execution, ws, execution_id),
    )


async def execution_history(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    execution_id = _execution_id(request)
    store = container(request).store
    return await answer_read(
        request, queries.execution_history, store, ws, execution_id, missing="execution"
    )


async def cancel_execution(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.RUN_EXECUTIONS)
    execution_id = _execution_id(request)
    body = await read_json(request, optional=True)
    cmd = build(m.CancelExecution, body, workspace_id=ws, execution_id=execution_id)
    result = await container(request).bus.execute(cmd)
    assert isinstance(result, ExecutionAnswer)
    answer = {
        "execution_id": str(result.execution_id),
        "status": result.status,
        "position": result.position,
    }
    return respond(answer, status=202)


_DATE_TIME = {"type": "string", "format": "date-time"}
Q_DESCRIPTION = (
    "a filter (a subset of Temporal's List Filter), ANDed with the other parameters. Fields:"
    " status, workflow_id, workflow_name, version, trigger, started_at, closed_at, duration_ms,"
    " failed_node, error_code, rerun_of, attr.<name> (a search attribute: text, number,"
    " true/false or ISO-8601 time, typed by the literal; an execution without it matches neither a"
    " comparison nor its NOT) (parent_id is refused as not available yet);"
    " comparisons = != > >= < <=, IN ('a', 'b'), BETWEEN x AND y, STARTS_WITH 'pre', IS NULL,"
    " IS NOT NULL, combined with NOT, AND, OR (in that precedence) and parentheses; literals"
    " 'text' ('' is a quote), numbers, true/false, times as ISO-8601 text. Optional"
    " ORDER BY started_at|closed_at|duration_ms [ASC|DESC] (default started_at DESC; rows"
    " without a value last). Example: status = 'failed' AND started_at >"
    " '2026-11-01T00:00:00Z' ORDER BY duration_ms DESC"
)

ROUTES: list[Route] = [
    Route(
        "POST",
        WS + "/workflows/{wf}/executions",
        start_execution,
        "Start an execution of a workflow version (default: the latest)",
        status=202,
        body=m.StartExecution,
        body_required=False,
        server_fields=("workspace_id", "workflow_id", "idempotency_key", "trigger"),
        extra_responses={
            429: "too_many_executions: the workspace has LINKFLOW_MAX_QUEUED_PER_WORKSPACE"
            " executions open (Retry-After)"
        },
        params=(idempotency_param("a repeat with the same key answers the same execution"),),
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/executions",
        list_executions,
        "The workspace's executions, newest first, cursor-paginated",
        params=(
            Param("q", {"type": "string", "maxLength": MAX_QUERY_LENGTH}, Q_DESCRIPTION),
            Param("status", {"type": "string", "enum": list(STATUSES)}),
            Param("workflow_id", {"type": "string", "format": "uuid"}),
            Param("started_after", _DATE_TIME),
            Param("started_before", _DATE_TIME),
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            ),
            Param(
                "cursor",
                {"type": "string"},
                "the next_cursor of the previous page (listed with the same ORDER BY)",
            ),
            MIN_POSITION,
        ),
        extra_responses={
            422: "invalid_request / invalid_cursor / invalid_query: details"
            ' [{path: "q", message, position}], position a character offset in q'
        },
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/executions/{id}",
        get_execution,
        "An execution with its node runs",
        params=(MIN_POSITION,),
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/executions/{id}/history",
        execution_history,
        "The execution's events in order (from the event store)",
        params=(MIN_POSITION,),
        tag="executions",
    ),
    Route(
        "POST",
        WS + "/executions/{id}/cancel",
        cancel_execution,
        "Cancel a running execution",
        status=202,
        body=m.CancelExecution,
        body_required=False,
        server_fields=("workspace_id", "execution_id"),
        tag="executions",
    ),
]
