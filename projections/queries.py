"""Queries for the visibility API, over the projector's read models; and the audit history, which
reads the event store itself. Every query takes the workspace: no path returns another's rows.
Imported by `gateways/`.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.webhook import hook_of
from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE, EventStore

PROJECTOR = "projector"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def encode_cursor(started_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([started_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Raises ValueError for anything that is not a cursor we issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, row_id = json.loads(raw)
        return datetime.fromisoformat(started_at), UUID(row_id)
    except Exception as exc:
        raise ValueError("not a valid cursor") from exc


async def projector_position(conn: DictConnection) -> int:
    cur = await conn.execute(
        "SELECT position FROM consumer_positions WHERE consumer = %s", (PROJECTOR,)
    )
    row = await cur.fetchone()
    return int(row["position"]) if row else 0


async def open_executions(conn: DictConnection, workspace_id: UUID) -> tuple[int, int]:
    """How many of the workspace's executions the read model has running, and the projector's
    position that count is as of (an index-only count on `rm_executions_ws_status`)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM rm_executions WHERE workspace_id = %s"
        " AND status = 'running') AS open,"
        " (SELECT position FROM consumer_positions WHERE consumer = %s) AS position",
        (workspace_id, PROJECTOR),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["open"]), int(row["position"] or 0)


# ---------------------------------------------------------------- workflows


def _workflow(row: dict[str, Any]) -> dict[str, Any]:
    workflow = {
        "id": str(row["id"]),
        "name": row["name"],
        "version": row["latest_version"],
        "active": row["active_version"] is not None,
        "active_version": row["active_version"],
        "archived": row["archived"],
        "trigger_type": row["trigger_type"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }
    hook = hook_of(row["webhook_token"], row["trigger_type"])
    if hook:
        workflow["webhook"] = hook
    return workflow


async def list_workflows(
    conn: DictConnection, workspace_id: UUID, include_archived: bool = False
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT * FROM rm_workflows WHERE workspace_id = %s AND (%s OR NOT archived)"
        " ORDER BY created_at DESC, id DESC",
        (workspace_id, include_archived),
    )
    return [_workflow(row) for row in await cur.fetchall()]


async def get_workflow(
    conn: DictConnection, workspace_id: UUID, workflow_id: UUID
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT w.*, v.definition FROM rm_workflows w JOIN rm_workflow_versions v"
        " ON v.workflow_id = w.id AND v.version = w.latest_version"
        " WHERE w.workspace_id = %s AND w.id = %s",
        (workspace_id, workflow_id),
    )
    row = await cur.fetchone()
    return _workflow(row) | {"definition": row["definition"]} if row else None


async def list_versions(
    conn: DictConnection, workspace_id: UUID, workflow_id: UUID
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT version, name, created_at FROM rm_workflow_versions"
        " WHERE workspace_id = %s AND workflow_id = %s ORDER BY version",
        (workspace_id, workflow_id),
    )
    return [
        {"version": r["version"], "name": r["name"], "created_at": _iso(r["created_at"])}
        for r in await cur.fetchall()
    ]


async def get_version(
    conn: DictConnection, workspace_id: UUID, workflow_id: UUID, version: int
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT version, name, definition, created_at FROM rm_workflow_versions"
        " WHERE workspace_id = %s AND workflow_id = %s AND version = %s",
        (workspace_id, workflow_id, version),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return {
        "workflow_id": str(workflow_id),
        "version": row["version"],
        "name": row["name"],
        "definition": row["definition"],
        "created_at": _iso(row["created_at"]),
    }


# ---------------------------------------------------------------- executions


def _execution(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "workflow_id": str(row["workflow_id"]),
        "version": row["version"],
        "status": row["status"],
        "trigger": row["trigger"],
        "input": row["input"],
        "output": row["output"],
        "error": row["error"],
        "started_at": _iso(row["started_at"]),
        "closed_at": _iso(row["closed_at"]),
    }


async def list_executions(
    conn: DictConnection,
    workspace_id: UUID,
    *,
    status: str | None = None,
    workflow_id: UUID | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first, keyset-paginated on (started_at, id)."""
    where = ["workspace_id = %s"]
    params: list[Any] = [workspace_id]
    if status:
        where.append("status = %s")
        params.append(status)
    if workflow_id:
        where.append("workflow_id = %s")
        params.append(workflow_id)
    if started_after:
        where.append("started_at > %s")
        params.append(started_after)
    if started_before:
        where.append("started_at < %s")
        params.append(started_before)
    if cursor:
        at, row_id = decode_cursor(cursor)
        where.append("(started_at, id) < (%s, %s)")
        params.extend([at, row_id])
    params.append(limit + 1)
    cur = await conn.execute(
        f"SELECT * FROM rm_executions WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY started_at DESC, id DESC LIMIT %s",
        params,
    )
    rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["id"]) if more else None
    return {"items": [_execution(r) for r in rows], "next_cursor": next_cursor}


async def get_execution(
    conn: DictConnection, workspace_id: UUID, execution_id: UUID
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT * FROM rm_executions WHERE workspace_id = %s AND id = %s",
        (workspace_id, execution_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT * FROM rm_node_runs WHERE workspace_id = %s AND execution_id = %s"
        " ORDER BY started_at NULLS LAST, closed_at, node_id",
        (workspace_id, execution_id),
    )
    nodes = [
        {
            "id": n["node_id"],
            "type": n["type"],
            "status": n["status"],
            "attempts": n["attempts"],
            "started_at": _iso(n["started_at"]),
            "closed_at": _iso(n["closed_at"]),
            "error": n["error"],
            "output": n["output"],
        }
        for n in await cur.fetchall()
    ]
    return _execution(row) | {"callback": row["callback"], "nodes": nodes}


# ---------------------------------------------------------------- audit


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


async def execution_history(
    conn: DictConnection, store: EventStore, workspace_id: UUID, execution_id: UUID
) -> list[dict[str, Any]] | None:
    """The execution's events in order, read from the event store (not a projection)."""
    cur = await conn.execute(
        f"SELECT originator_version, topic, state FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s ORDER BY originator_version",
        (execution_id,),
    )
    rows = await cur.fetchall()
    history = []
    for row in rows:
        event = store.decode(execution_id, row["originator_version"], row["topic"], row["state"])
        if getattr(event, "workspace_id", None) != str(workspace_id):
            return None
        data = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
        history.append(
            {
                "version": row["originator_version"],
                "type": type(event).__name__,
                "recorded_at": event.timestamp.isoformat(),
                "data": _jsonable(data),
            }
        )
    if not history or not row["topic"].startswith("domain.execution:"):
        return None
    return history
