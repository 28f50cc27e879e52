"""The visibility projector: turns Workflow and Execution events into the read models that the
API's list/get endpoints query (`rm_workflows`, `rm_workflow_versions`, `rm_executions`,
`rm_node_runs`, `rm_execution_attributes`; `rm_api_keys` through `projections.api_keys`,
`rm_credentials` through `projections.credentials`). Consumer group / position name:
`projector`. Read models are disposable: drop them, reset the position to 0, and the projector
rebuilds them from the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg.types.json import Jsonb

from domain.execution import Execution
from domain.statuses import CallbackStatus
from domain.workflow import Workflow
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from projections import api_keys, credentials, execution_rows

READ_MODEL_TABLES = (
    "rm_workflows",
    "rm_workflow_versions",
    "rm_executions",
    "rm_node_runs",
    "rm_execution_attributes",
    # Rollups of rm_executions kept by PostgreSQL's triggers (migration 013, projections.stats).
    "rm_execution_stats",
    *api_keys.TABLES,
    credentials.TABLE,
)


def workflow_change(e: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a Workflow event sets on its `rm_workflows` row (the whole row for WorkflowCreated;
    `archived` is to be OR-ed in), and the `rm_workflow_versions` row it adds (or None). The
    projector writes these; time travel (`projections.states`) folds them in memory: one code."""
    trigger = "manual"
    if isinstance(e, Workflow.WorkflowCreated | Workflow.WorkflowVersionPublished):
        trigger = (e.definition.get("trigger") or {}).get("type", "manual")
    if isinstance(e, Workflow.WorkflowCreated):
        row = {
            "id": e.originator_id,
            "workspace_id": e.workspace_id,
            "name": e.name,
            "latest_version": 1,
            "active_version": None,
            "archived": False,
            "trigger_type": trigger,
            "created_by": e.created_by,
            "created_at": e.timestamp,
            "updated_at": e.timestamp,
            "event_version": e.originator_version,
            "webhook_token": e.webhook_token,
        }
        return row, _version(e.originator_id, 1, e.workspace_id, e.name, e.definition, e.timestamp)
    if isinstance(e, Workflow.WorkflowVersionPublished):
        changed = {
            "latest_version": e.number,
            "name": e.name,
            "trigger_type": trigger,
            "updated_at": e.timestamp,
            "event_version": e.originator_version,
        }
        version = _version(
            e.originator_id, e.number, e.workspace_id, e.name, e.definition, e.timestamp
        )
        return changed, version
    changed = {
        "active_version": getattr(e, "active_version", None),
        "archived": isinstance(e, Workflow.WorkflowArchived),
        "updated_at": e.timestamp,
        "event_version": e.originator_version,
    }
    return changed, None


def _version(wf: Any, number: int, ws: str, name: str, definition: Any, at: Any) -> dict[str, Any]:
    return {
        "workflow_id": wf,
        "version": number,
        "workspace_id": ws,
        "name": name,
        "definition": definition,
        "created_at": at,
    }


async def _workflow_created(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    row, version = workflow_change(e)
    columns = [c for c in row if c not in ("active_version", "archived")]
    await conn.execute(
        f"INSERT INTO rm_workflows ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT (id) DO NOTHING",
        [row[c] for c in columns],
    )
    assert version is not None
    await _version_row(conn, version)


async def _version_row(conn: DictConnection, version: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO rm_workflow_versions (workflow_id, version, workspace_id, name, definition,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            version["workflow_id"],
            version["version"],
            version["workspace_id"],
            version["name"],
            Jsonb(version["definition"]),
            version["created_at"],
        ),
    )


async def _version_published(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    changed, version = workflow_change(e)
    await conn.execute(
        "UPDATE rm_workflows SET latest_version = %s, name = %s, trigger_type = %s,"
        " updated_at = %s, event_version = %s WHERE id = %s",
        (
            changed["latest_version"],
            changed["name"],
            changed["trigger_type"],
            changed["updated_at"],
            changed["event_version"],
            e.originator_id,
        ),
    )
    assert version is not None
    await _version_row(conn, version)


async def _workflow_state(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    changed, _ = workflow_change(e)
    await conn.execute(
        "UPDATE rm_workflows SET active_version = %s, archived = archived OR %s,"
        " updated_at = %s, event_version = %s WHERE id = %s",
        (
            changed["active_version"],
            changed["archived"],
            changed["updated_at"],
            changed["event_version"],
            e.originator_id,
        ),
    )


CALLBACK_EVENTS = (
    Execution.CallbackFailed,
    Execution.CallbackDelivered,
    Execution.CallbackAbandoned,
)


def callback_change(e: Any) -> dict[str, Any]:
    """What a callback event changes in the execution row's `callback`: its status (still
    pending after CallbackFailed, which may be abandoned next) and attempts. Used by the
    projector and by time travel (`projections.states`)."""
    status = CallbackStatus.PENDING
    if isinstance(e, Execution.CallbackDelivered):
        status = CallbackStatus.DELIVERED
    elif isinstance(e, Execution.CallbackAbandoned):
        status = CallbackStatus.ABANDONED
    attempts = e.attempts if isinstance(e, Execution.CallbackAbandoned) else e.attempt
    return {"status": str(status), "attempts": attempts}


async def _callback_attempted(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    change = callback_change(e)
    await conn.execute(
        "UPDATE rm_executions SET callback = callback || jsonb_build_object('status', %s::text,"
        " 'attempts', %s::int), event_version = %s WHERE id = %s AND callback IS NOT NULL",
        (change["status"], change["attempts"], e.originator_version, e.originator_id),
    )


_HANDLERS: dict[type, Callable[[DictConnection, LoggedEvent, Any], Awaitable[None]]] = {
    Workflow.WorkflowCreated: _workflow_created,
    Workflow.WorkflowVersionPublished: _version_published,
    Workflow.WorkflowActivated: _workflow_state,
    Workflow.WorkflowDeactivated: _workflow_state,
    Workflow.WorkflowArchived: _workflow_state,
    **api_keys.HANDLERS,
    **{event: _callback_attempted for event in CALLBACK_EVENTS},
    **credentials.HANDLERS,
}


class VisibilityProjector(EventConsumer):
    name = "projector"
    handles = (*execution_rows.HANDLES, *_HANDLERS)
    # A few milliseconds of lag for fewer, larger batches (a row folds all of its events).
    linger_ms = 10

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        await project(conn, events)


async def project(conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
    """Apply one batch of events (in log order) to the read models.

    Execution and node rows first, folded (one statement per shape of row; see
    `projections.execution_rows`); then the other events in log order. Callback events
    update rows that an earlier event inserted, so they come after. Pipeline mode: the
    statements go out without waiting for each answer (one round trip per batch); an error
    still fails the batch."""
    async with conn.pipeline(), conn.cursor() as cur:
        # Each row records the position of its status change (the live feed's order; None for
        # events projected without a log position, as some tests do).
        positions = (logged.position if logged else None for logged, _ in events)
        for statement in execution_rows.fold((event for _, event in events), positions):
            await cur.execute(statement.sql, statement.params())
        for logged, event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                await handler(conn, logged, event)


async def reset_read_models(conn: DictConnection) -> None:
    """Drop every read-model row and rewind the projector: it then rebuilds them from the log.
    Run it only while no projector process runs."""
    await conn.execute(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}")
    await conn.execute("UPDATE consumer_positions SET position = 0 WHERE consumer = 'projector'")
