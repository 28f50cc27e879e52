"""The visibility projector: turns Workflow and Execution events into the read models that the
API's list/get endpoints query (`rm_workflows`, `rm_workflow_versions`, `rm_executions`,
`rm_node_runs`; `rm_api_keys` through `projections.api_keys`, `rm_credentials` through
`projections.credentials`). Consumer group / position name: `projector`. Read models are
disposable: drop them, reset the position to 0, and the projector rebuilds them from the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg.types.json import Jsonb

from domain.execution import Execution
from domain.workflow import Workflow
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from projections import api_keys, credentials

READ_MODEL_TABLES = (
    "rm_workflows",
    "rm_workflow_versions",
    "rm_executions",
    "rm_node_runs",
    *api_keys.TABLES,
    credentials.TABLE,
)


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


async def _workflow_created(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    trigger = (e.definition.get("trigger") or {}).get("type", "manual")
    await conn.execute(
        "INSERT INTO rm_workflows (id, workspace_id, name, latest_version, trigger_type,"
        " created_by, created_at, updated_at, event_version, webhook_token)"
        " VALUES (%s, %s, %s, 1, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (
            e.originator_id,
            e.workspace_id,
            e.name,
            trigger,
            e.created_by,
            e.timestamp,
            e.timestamp,
            e.originator_version,
            e.webhook_token,
        ),
    )
    await _version_row(conn, e.originator_id, 1, e.workspace_id, e.name, e.definition, e.timestamp)


async def _version_row(
    conn: DictConnection, wf: Any, number: int, ws: str, name: str, definition: Any, at: Any
) -> None:
    await conn.execute(
        "INSERT INTO rm_workflow_versions (workflow_id, version, workspace_id, name, definition,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (wf, number, ws, name, Jsonb(definition), at),
    )


async def _version_published(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    trigger = (e.definition.get("trigger") or {}).get("type", "manual")
    await conn.execute(
        "UPDATE rm_workflows SET latest_version = %s, name = %s, trigger_type = %s,"
        " updated_at = %s, event_version = %s WHERE id = %s",
        (e.number, e.name, trigger, e.timestamp, e.originator_version, e.originator_id),
    )
    await _version_row(
        conn, e.originator_id, e.number, e.workspace_id, e.name, e.definition, e.timestamp
    )


async def _workflow_state(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    active = getattr(e, "active_version", None)
    archived = isinstance(e, Workflow.WorkflowArchived)
    await conn.execute(
        "UPDATE rm_workflows SET active_version = %s, archived = archived OR %s,"
        " updated_at = %s, event_version = %s WHERE id = %s",
        (active, archived, e.timestamp, e.originator_version, e.originator_id),
    )


async def _execution_started(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "INSERT INTO rm_executions (id, workspace_id, workflow_id, version, status, trigger,"
        " input, started_at, event_version)"
        " VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (
            e.originator_id,
            e.workspace_id,
            e.workflow_id,
            e.workflow_version,
            e.trigger,
            _json(e.input),
            e.timestamp,
            e.originator_version,
        ),
    )
    if e.callback_url:
        callback = {"url": e.callback_url, "status": "pending", "attempts": 0}
        await conn.execute(
            "UPDATE rm_executions SET callback = %s WHERE id = %s AND callback IS NULL",
            (Jsonb(callback), e.originator_id),
        )


async def _execution_closed(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    status = {
        Execution.ExecutionCompleted: "completed",
        Execution.ExecutionFailed: "failed",
        Execution.ExecutionCanceled: "canceled",
        Execution.ExecutionTimedOut: "timed_out",
    }[type(e)]
    error = getattr(e, "error", None)
    if isinstance(e, Execution.ExecutionCanceled):
        error = {"type": "canceled", "message": e.reason}
    elif isinstance(e, Execution.ExecutionTimedOut):
        error = {"type": "timeout", "message": "execution timed out"}
    await conn.execute(
        "UPDATE rm_executions SET status = %s, output = %s, error = %s, closed_at = %s,"
        " event_version = %s WHERE id = %s",
        (
            status,
            _json(getattr(e, "output", None)),
            _json(error),
            e.timestamp,
            e.originator_version,
            e.originator_id,
        ),
    )


async def _node_scheduled(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "INSERT INTO rm_node_runs (execution_id, node_id, workspace_id, type, status, attempts,"
        " started_at) VALUES (%s, %s, %s, %s, 'scheduled', %s, %s)"
        " ON CONFLICT (execution_id, node_id) DO UPDATE SET status = 'scheduled',"
        " attempts = EXCLUDED.attempts, error = NULL",
        (e.originator_id, e.node_id, e.workspace_id, e.node_type, e.attempt, e.timestamp),
    )


async def _node_closed(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    """Completed, failed, timed out, skipped or canceled (or an attempt that will be retried)."""
    output = None
    error = getattr(e, "error", None)
    retrying = getattr(e, "will_retry", False)
    if isinstance(e, Execution.NodeCompleted):
        status, output = "completed", e.output
    elif isinstance(e, Execution.NodeFailed):
        status = "failed"
    elif isinstance(e, Execution.NodeTimedOut):
        status = "timed_out"
        error = {"type": "timeout", "message": f"attempt {e.attempt} timed out"}
    elif isinstance(e, Execution.NodeSkipped):
        status = "skipped"
    else:
        status = "canceled"
    if retrying:
        await conn.execute(
            "UPDATE rm_node_runs SET error = %s WHERE execution_id = %s AND node_id = %s",
            (_json(error), e.originator_id, e.node_id),
        )
        return
    # Only a skipped node has no row yet (it was never scheduled); its event carries the type.
    node_type = getattr(e, "node_type", "")
    await conn.execute(
        "INSERT INTO rm_node_runs (execution_id, node_id, workspace_id, type, status, attempts,"
        " closed_at, error, output) VALUES (%s, %s, %s, %s, %s, 0, %s, %s, %s)"
        " ON CONFLICT (execution_id, node_id) DO UPDATE SET status = EXCLUDED.status,"
        " closed_at = EXCLUDED.closed_at, error = EXCLUDED.error, output = EXCLUDED.output",
        (
            e.originator_id,
            e.node_id,
            e.workspace_id,
            node_type,
            status,
            e.timestamp,
            _json(error),
            _json(output),
        ),
    )


async def _callback_attempted(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    """CallbackFailed (still pending, or abandoned next), CallbackDelivered, CallbackAbandoned."""
    status = "pending"
    if isinstance(e, Execution.CallbackDelivered):
        status = "delivered"
    elif isinstance(e, Execution.CallbackAbandoned):
        status = "abandoned"
    attempts = e.attempts if isinstance(e, Execution.CallbackAbandoned) else e.attempt
    await conn.execute(
        "UPDATE rm_executions SET callback = callback || jsonb_build_object('status', %s::text,"
        " 'attempts', %s::int), event_version = %s WHERE id = %s AND callback IS NOT NULL",
        (status, attempts, e.originator_version, e.originator_id),
    )


_HANDLERS: dict[type, Callable[[DictConnection, LoggedEvent, Any], Awaitable[None]]] = {
    Workflow.WorkflowCreated: _workflow_created,
    Workflow.WorkflowVersionPublished: _version_published,
    Workflow.WorkflowActivated: _workflow_state,
    Workflow.WorkflowDeactivated: _workflow_state,
    Workflow.WorkflowArchived: _workflow_state,
    Execution.ExecutionStarted: _execution_started,
    Execution.ExecutionCompleted: _execution_closed,
    Execution.ExecutionFailed: _execution_closed,
    Execution.ExecutionCanceled: _execution_closed,
    Execution.ExecutionTimedOut: _execution_closed,
    Execution.NodeScheduled: _node_scheduled,
    Execution.NodeCompleted: _node_closed,
    Execution.NodeFailed: _node_closed,
    Execution.NodeTimedOut: _node_closed,
    Execution.NodeSkipped: _node_closed,
    Execution.NodeCanceled: _node_closed,
    **api_keys.HANDLERS,
    Execution.CallbackFailed: _callback_attempted,
    Execution.CallbackDelivered: _callback_attempted,
    Execution.CallbackAbandoned: _callback_attempted,
    **credentials.HANDLERS,
}


class VisibilityProjector(EventConsumer):
    name = "projector"
    handles = tuple(_HANDLERS)

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        # Pipeline mode: the batch's statements go out without waiting for each answer (one
        # round trip per batch instead of one per statement); errors still fail the batch.
        async with conn.pipeline():
            for logged, event in events:
                await _HANDLERS[type(event)](conn, logged, event)


async def reset_read_models(conn: DictConnection) -> None:
    """Drop every read-model row and rewind the projector: it then rebuilds them from the log.
    Run it only while no projector process runs."""
    await conn.execute(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}")
    await conn.execute("UPDATE consumer_positions SET position = 0 WHERE consumer = 'projector'")
