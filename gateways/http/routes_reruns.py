"""Re-run routes: re-run one closed execution (`POST …/executions/{id}/rerun`, optionally from a
node, on the original's or the latest version, with a new input) and every closed execution a
filter `q` matches (`POST …/executions/rerun`, at most `MAX_BULK_RERUN`; more is refused). Both
take an optional Idempotency-Key. `ROUTES` is the table `app.make_app` registers (before the
execution routes) and `openapi` documents. Imported by `gateways.http.app`.
"""

from __future__ import annotations

from uuid import UUID

from aiohttp import web
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from commands.handlers import ExecutionAnswer
from commands.reruns import RerunExecution, RerunExecutions
from domain.execution import CLOSED_STATUS
from domain.rerun import MAX_BULK_RERUN, BulkRerun, RerunRefused
from domain.roles import Action
from gateways.http.auth import execute_with_access, workspace_access
from gateways.http.consistency import MIN_POSITION, min_position, wait_for_projection
from gateways.http.context import container, respond
from gateways.http.errors import build, invalid, parse_uuid, read_json
from gateways.http.routes_executions import (
    IDEMPOTENCY_HEADER,
    WS,
    idempotency_param,
    parsed_query,
)
from gateways.http.routing import Route
from projections import queries
from projections.query_language import MAX_QUERY_LENGTH, ExecutionQuery

CLOSED = sorted(CLOSED_STATUS.values())
_IDEMPOTENCY = idempotency_param("a repeat with the same key answers the same re-run(s)")


class BulkRerunBody(BaseModel):
    """The body of a bulk re-run: the filter of the executions to re-run."""

    model_config = ConfigDict(extra="forbid")
    q: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)


async def rerun_execution(request: web.Request) -> web.Response:
    async def command(ws: UUID) -> RerunExecution:
        execution_id = parse_uuid(request.match_info["id"], "execution")
        body = await read_json(request, optional=True)
        return build(
            RerunExecution,
            body,
            workspace_id=ws,
            execution_id=execution_id,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
        )

    try:
        result = await execute_with_access(request, Action.RUN_EXECUTIONS, command)
    except RerunRefused as exc:
        raise invalid(exc.path, exc.message) from None
    assert isinstance(result, ExecutionAnswer)
    execution_id = str(result.execution_id)
    headers = {"Location": f"{WS.format(ws=request.match_info['ws'])}/executions/{execution_id}"}
    if result.repeated:
        headers["Idempotent-Replayed"] = "true"
    answer = {"execution_id": execution_id, "position": result.position}
    return respond(answer, status=202, headers=headers)


async def _closed_matches(request: web.Request, ws: UUID, q: ExecutionQuery) -> list[UUID]:
    """The ids of the closed executions `q` matches (in its order), at most one more than
    `MAX_BULK_RERUN` (the read model's view: at least up to the request's `min_position`)."""
    statement, params = queries.list_statement(ws, q=q, limit=None)
    closed = sql.SQL("SELECT id FROM ({}) m WHERE status = ANY(%s) LIMIT %s").format(statement)
    async with container(request).pool.connection() as conn:
        cur = await conn.execute(closed, [*params, CLOSED, MAX_BULK_RERUN + 1], prepare=False)
        rows = await cur.fetchall()
    return [row["id"] for row in rows]


async def _requested_before(request: web.Request, ws: UUID, key: str) -> bool:
    """Whether a bulk re-run with this Idempotency-Key was recorded in the workspace."""
    bulk_id = BulkRerun.id_for(str(ws), key)
    return await container(request).bus.run(lambda store: store.exists(bulk_id))


async def rerun_matching(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.RUN_EXECUTIONS)
    after = min_position(request)  # read your writes: q sees the log up to it (as lists do)
    body = build(BulkRerunBody, await read_json(request))
    key = request.headers.get(IDEMPOTENCY_HEADER)
    await wait_for_projection(request, after)
    ids: list[UUID] = []
    if not (key and await _requested_before(request, ws, key)):  # a repeat: its answer stands
        ids = await _closed_matches(request, ws, parsed_query(body.q))
    if len(ids) > MAX_BULK_RERUN:
        message = f"matches more than {MAX_BULK_RERUN} closed executions: narrow the filter"
        raise invalid("q", message, "too_many_matches")
    cmd = RerunExecutions(
        workspace_id=ws,
        q=body.q,
        execution_ids=ids,
        idempotency_key=key,
    )
    result = await container(request).bus.execute(cmd)
    headers = {"Idempotent-Replayed": "true"} if result.fields.get("repeated") else None
    answer = {
        "count": result.fields["count"],
        "execution_ids": result.fields["execution_ids"],
        "skipped": result.fields["skipped"],
        "position": result.position,
    }
    return respond(answer, status=202, headers=headers)


ROUTES: list[Route] = [
    Route(
        "POST",
        WS + "/executions/rerun",
        rerun_matching,
        f"Re-run every closed execution the filter q matches (at most {MAX_BULK_RERUN})",
        status=202,
        body=BulkRerunBody,
        params=(_IDEMPOTENCY, MIN_POSITION),
        extra_responses={
            422: "invalid_query: q is malformed; too_many_matches: q matches more than"
            f" {MAX_BULK_RERUN} closed executions (nothing is re-run)"
        },
        tag="executions",
    ),
    Route(
        "POST",
        WS + "/executions/{id}/rerun",
        rerun_execution,
        "Re-run a closed execution as a new one (rerun_of), optionally from a node whose"
        " ancestors' outputs are reused",
        status=202,
        body=RerunExecution,
        body_required=False,
        server_fields=("workspace_id", "execution_id", "idempotency_key"),
        params=(_IDEMPOTENCY,),
        extra_responses={
            409: "execution_running: the original has not closed yet; archived",
            422: "invalid_request: from_node is not a node of the chosen version, or an"
            " ancestor of it has no output in the original",
        },
        tag="executions",
    ),
]
