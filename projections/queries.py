"""Queries for the visibility API, over the projector's read models; and the audit history, which
reads the event store itself. Every query takes the workspace: no path returns another's rows.
Imported by `gateways/`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import MapperDeserialisationError
from psycopg import sql

from domain.json_limits import too_deep
from domain.webhook import hook_of
from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE, EventStore
from projections.query_language import (
    DEFAULT_ORDER,
    FIELDS,
    ORDER_FIELDS,
    ExecutionQuery,
    FieldType,
    Order,
    after_sql,
    order_sql,
    where_sql,
)

PROJECTOR = "projector"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class Cursor:
    """Where a page of executions ends: the last row's value of the sort field (None when it
    has none) and its id, for the order it was listed in."""

    order: Order
    value: datetime | int | None
    row_id: UUID


def encode_cursor(cursor: Cursor) -> str:
    """`[value, id]` for the default order (as before `q` existed), else `[value, id, field,
    "asc"|"desc"]`, in unpadded URL-safe base64."""
    value = cursor.value.isoformat() if isinstance(cursor.value, datetime) else cursor.value
    parts: list[Any] = [value, str(cursor.row_id)]
    if cursor.order != DEFAULT_ORDER:
        parts += [cursor.order.field.name, "desc" if cursor.order.descending else "asc"]
    raw = json.dumps(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """Raises ValueError for anything that is not a cursor we issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if len(parts) == 2:
            parts += [DEFAULT_ORDER.field.name, "desc"]
        value, row_id, name, direction = parts
        if name not in ORDER_FIELDS or direction not in ("asc", "desc"):
            raise ValueError("not a sort of ours")
        field = FIELDS[name]
        if value is None and not field.nullable:
            raise ValueError("a value is missing")
        if value is not None:
            if field.type is FieldType.TIME:
                value = datetime.fromisoformat(value)
            elif type(value) is not int:
                raise ValueError("not an integer")
        return Cursor(Order(field, direction == "desc"), value, UUID(row_id))
    except Exception as exc:
        raise ValueError("not a valid cursor") from exc


async def projector_position(conn: DictConnection) -> int:
    cur = await conn.execute(
        "SELECT position FROM consumer_positions WHERE consumer = %s", (PROJECTOR,)
    )
    row = await cur.fetchone()
    return int(row["position"]) if row else 0


async def open_executions(conn: DictConnection, workspace_id: UUID) -> tuple[int, int]:
    """How many of the workspace's executions the read model has queued or running, and the
    projector's position that count is as of (an index-only count on `rm_executions_ws_status`)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM rm_executions WHERE workspace_id = %s"
        " AND status IN ('running', 'queued')) AS open,"
        " (SELECT position FROM consumer_positions WHERE consumer = %s) AS position",
        (workspace_id, PROJECTOR),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["open"]), int(row["position"] or 0)


# ---------------------------------------------------------------- workflows


def workflow_item(row: dict[str, Any]) -> dict[str, Any]:
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
    return [workflow_item(row) for row in await cur.fetchall()]


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
    return workflow_item(row) | {"definition": row["definition"]} if row else None


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


def execution_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "workflow_id": str(row["workflow_id"]),
        "workflow_name": row["workflow_name"],
        "version": row["version"],
        "status": row["status"],
        "trigger": row["trigger"],
        "input": row["input"],
        "output": row["output"],
        "error": row["error"],
        "started_at": _iso(row["started_at"]),
        "closed_at": _iso(row["closed_at"]),
        "duration_ms": row["duration_ms"],
        "search_attributes": row["search_attributes"] or {},
        "rerun_of": str(row["rerun_of"]) if row.get("rerun_of") else None,
    }


def list_item(row: dict[str, Any]) -> dict[str, Any]:
    """An `rm_executions` row as a list item: what `list_executions` answers for it, and what an
    export (`projections.export`) writes of it."""
    return execution_item(row)


def list_statement(
    workspace_id: UUID,
    *,
    status: str | None = None,
    workflow_id: UUID | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    q: ExecutionQuery | None = None,
    limit: int | None = 50,
    cursor: Cursor | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """The SELECT of `list_executions` (one row more than `limit`) and its parameters; with
    `limit` None, of every matching row (an export, `projections.export`)."""
    q = q or ExecutionQuery()
    order = q.order
    optional: list[tuple[sql.Composable, Any]] = [
        (sql.SQL("status = %s"), status),
        (sql.SQL("workflow_id = %s"), workflow_id),
        (sql.SQL("started_at > %s"), started_after),
        (sql.SQL("started_at < %s"), started_before),
    ]
    conditions: list[tuple[sql.Composable, list[Any]]] = [
        (sql.SQL("workspace_id = %s"), [workspace_id])
    ]
    conditions += [(condition, [value]) for condition, value in optional if value]
    if q.where is not None:
        conditions.append(where_sql(q.where))
    if cursor:
        if cursor.order != order:
            raise ValueError("the cursor is for another order")
        conditions.append(after_sql(order, cursor.value, cursor.row_id))
    statement = sql.SQL("SELECT * FROM rm_executions WHERE {} ORDER BY {}").format(
        sql.SQL(" AND ").join([condition for condition, _ in conditions]), order_sql(order)
    )
    params = [value for _, values in conditions for value in values]
    if limit is None:
        return statement, params
    return sql.SQL("{} LIMIT %s").format(statement), [*params, limit + 1]


async def list_executions(
    conn: DictConnection,
    workspace_id: UUID,
    *,
    q: ExecutionQuery | None = None,
    limit: int = 50,
    **filters: Any,
) -> dict[str, Any]:
    """Keyset-paginated on (the sort field, id): newest first, unless `q` (the parsed filter,
    which combines with the other `filters` of `list_statement` by AND) orders otherwise. A
    `cursor` must come from a page listed in the same order (ValueError otherwise)."""
    statement, params = list_statement(workspace_id, q=q, limit=limit, **filters)
    # Never prepared: a prepared statement gets a generic plan after five runs, blind to the
    # values (one over 1,000,000 executions took 490 ms instead of 9).
    cur = await conn.execute(statement, params, prepare=False)
    rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        order = (q or ExecutionQuery()).order
        last = rows[-1]
        next_cursor = encode_cursor(Cursor(order, last[order.column], last["id"]))
    return {"items": [execution_item(r) for r in rows], "next_cursor": next_cursor}


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
    return execution_answer(row, await cur.fetchall())


def execution_answer(row: dict[str, Any], node_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`GET …/executions/{id}`: the `rm_executions` row and its `rm_node_runs` rows (in the
    order `get_execution` reads them); time travel (`projections.states`) renders with it."""
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
            "reused": bool(n.get("reused")),
        }
        for n in node_rows
    ]
    return execution_item(row) | {"callback": row["callback"], "nodes": nodes}


# ---------------------------------------------------------------- audit

# Event data nested deeper than this is not rendered in a history (it could not be encoded
# within the interpreter's recursion limit); the API's limits keep new data far shallower.
HISTORY_MAX_DEPTH = 200
UNRENDERABLE: dict[str, str] = {"$unrenderable": "nested too deep"}
_JSON_SCALARS = (str, int, float, bool, type(None))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, _JSON_SCALARS):
        return value
    return str(value)  # UUID, and any other type the transcoder knows


def _renderable(data: dict[str, Any]) -> Any:
    """The event's data as JSON-ready values, or UNRENDERABLE when it is nested too deeply to
    be encoded (older events, stored before bodies had a depth limit)."""
    if too_deep(data, HISTORY_MAX_DEPTH) is not None:
        return UNRENDERABLE
    try:
        return _jsonable(data)
    except RecursionError:
        return UNRENDERABLE


ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
_TOKEN = re.compile(rb'["\[\]{},:]')
_STRING_REST = re.compile(rb'(?:[^"\\]|\\.)*"', re.S)


def _top_level_fields(state: bytes) -> dict[str, bytes]:
    """The raw JSON of each field of the JSON object `state`, found without parsing the values
    (so none is too deep to find); ValueError if `state` is not an object."""
    fields: dict[str, bytes] = {}
    pos = state.index(b"{") + 1
    depth = 0
    key: str | None = None
    value_start = pos
    while True:
        token = _TOKEN.search(state, pos)
        if token is None:
            raise ValueError("unterminated JSON object")
        char, pos = token.group(), token.end()
        if char == b'"':
            rest = _STRING_REST.match(state, pos)
            if rest is None:
                raise ValueError("unterminated JSON string")
            if depth == 0 and key is None:
                key = json.loads(state[token.start() : rest.end()])
            pos = rest.end()
        elif char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}") and depth > 0:
            depth -= 1
        elif depth == 0 and char == b":":
            value_start = pos
        elif depth == 0 and char in (b",", b"}"):
            if key is not None:
                fields[key] = state[value_start : token.start()].strip()
            key = None
            if char == b"}":
                return fields


def _field(store: EventStore, fields: dict[str, bytes], name: str) -> Any:
    """One top-level field decoded by the application's transcoder (None if it cannot be)."""
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return store.mapper.transcoder.decode(raw)
    except (ValueError, RecursionError, TypeError, KeyError):
        return None


def history_entry(store: EventStore, execution_id: UUID, row: dict[str, Any]) -> dict[str, Any]:
    """One event of a history, with its `workspace_id` (popped by the caller). An event too
    deep to decode is answered from its top-level fields, its data UNRENDERABLE."""
    version, topic, state = row["originator_version"], row["topic"], bytes(row["state"])
    try:
        event = store.decode(execution_id, version, topic, state)
    except (MapperDeserialisationError, RecursionError):
        try:
            fields = _top_level_fields(state)
        except ValueError:
            fields = {}
        recorded = _field(store, fields, "timestamp")
        return {
            "workspace_id": _field(store, fields, "workspace_id"),
            "version": version,
            "type": topic.rpartition(":")[2].rpartition(".")[2],
            "recorded_at": recorded.isoformat() if isinstance(recorded, datetime) else None,
            "data": UNRENDERABLE,
        }
    data = {k: v for k, v in vars(event).items() if k not in ENVELOPE}
    return {
        "workspace_id": getattr(event, "workspace_id", None),
        "version": version,
        "type": type(event).__name__,
        "recorded_at": event.timestamp.isoformat(),
        "data": _renderable(data),
    }


async def execution_history(
    conn: DictConnection, store: EventStore, workspace_id: UUID, execution_id: UUID
) -> list[dict[str, Any]] | None:
    """The execution's events in order, read from the event store (not a projection). Data
    nested too deeply to answer (stored before the depth limit) is answered as
    `{"$unrenderable": "nested too deep"}`, event by event."""
    cur = await conn.execute(
        f"SELECT originator_version, topic, state FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s ORDER BY originator_version",
        (execution_id,),
    )
    rows = await cur.fetchall()
    history = []
    for row in rows:
        entry = history_entry(store, execution_id, row)
        if entry.pop("workspace_id") != str(workspace_id):
            return None
        history.append(entry)
    if not history or not row["topic"].startswith("domain.execution:"):
        return None
    return history
