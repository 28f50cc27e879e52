"""Time travel: an execution as `GET …/executions/{id}` would have shown it right after its
event N (`GET …/executions/{id}/state?at_version=N`), and a workflow as `GET …/workflows/{wf}`
would have (`…/workflows/{wf}/state?at_version=N`).

One code path with the projector: the execution's events up to N, read from the event store,
are folded by `projections.execution_rows.fold_rows` (the fold whose rows the projector writes;
then the callback events with `projections.visibility.callback_change`, as the projector does)
and rendered by `projections.queries.execution_answer` (what the GET renders its rows with).
The rows' JSON columns are unwrapped, and `duration_ms` (a generated column in PostgreSQL,
migration 011) is derived as PostgreSQL derives it. A workflow's events are folded with
`projections.visibility.workflow_change` (what the projector writes for each) and rendered with
`projections.queries.workflow_item` and the latest version's definition, as the GET does.

Imported by `gateways.http.routes_audit`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE, EventStore
from projections.execution_rows import fold_rows
from projections.queries import execution_answer, workflow_item
from projections.visibility import CALLBACK_EVENTS, callback_change, workflow_change

EXECUTION_TOPICS = "domain.execution:"
WORKFLOW_TOPICS = "domain.workflow:"


class VersionOutOfRange(ValueError):
    """`at_version` is not one of the aggregate's versions (1..last)."""

    def __init__(self, last: int) -> None:
        super().__init__(f"must be from 1 to {last}, the last version")
        self.last = last


async def _events(conn: DictConnection, aggregate_id: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT notification_id, originator_version, topic, state, workspace_id"
        f" FROM {EVENTS_TABLE} WHERE originator_id = %s ORDER BY originator_version",
        (aggregate_id,),
    )
    return await cur.fetchall()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A folded row as PostgreSQL would read it back (JSON unwrapped, generated columns)."""
    plain = {k: v.obj if isinstance(v, Jsonb) else v for k, v in row.items()}
    started, closed = plain.get("started_at"), plain.get("closed_at")
    if isinstance(started, datetime) and isinstance(closed, datetime):
        plain["duration_ms"] = int((closed - started).total_seconds() * 1000)
    else:
        plain["duration_ms"] = None
    return plain


def _node_order(n: dict[str, Any]) -> tuple[Any, ...]:
    """`ORDER BY started_at NULLS LAST, closed_at, node_id`, as `get_execution` reads."""
    started, closed = n["started_at"], n["closed_at"]
    return (
        started is None,
        started or datetime.min,
        closed is None,
        closed or datetime.min,
        n["node_id"],
    )


def execution_at(
    store: EventStore, rows: list[dict[str, Any]], execution_id: UUID, at_version: int | None
) -> dict[str, Any]:
    """The execution right after its event `at_version` (None: the last); VersionOutOfRange."""
    last = rows[-1]["originator_version"]
    version = last if at_version is None else at_version
    if not 1 <= version <= last:
        raise VersionOutOfRange(last)
    events = [
        store.decode(execution_id, r["originator_version"], r["topic"], bytes(r["state"]))
        for r in rows[:version]
    ]
    positions = [r["notification_id"] for r in rows[:version]]
    folded = fold_rows(events, positions)
    row = folded.executions[execution_id].insert
    assert row is not None  # its first event is ExecutionStarted
    for event in events:  # the projector applies these after the fold's rows (visibility)
        if isinstance(event, CALLBACK_EVENTS) and row["callback"] is not None:
            row["callback"] = Jsonb(row["callback"].obj | callback_change(event))
            row["event_version"] = event.originator_version
    nodes = [_plain(n.insert) for n in folded.nodes.values() if n.insert is not None]
    return execution_answer(_plain(row), sorted(nodes, key=_node_order))


def workflow_at(
    store: EventStore, rows: list[dict[str, Any]], workflow_id: UUID, at_version: int | None
) -> dict[str, Any]:
    """The workflow right after its event `at_version` (None: the last); VersionOutOfRange."""
    last = rows[-1]["originator_version"]
    version = last if at_version is None else at_version
    if not 1 <= version <= last:
        raise VersionOutOfRange(last)
    row: dict[str, Any] = {}
    definitions: dict[int, Any] = {}
    for r in rows[:version]:
        event = store.decode(workflow_id, r["originator_version"], r["topic"], bytes(r["state"]))
        changed, added = workflow_change(event)
        archived = row.get("archived", False)
        row.update(changed)
        row["archived"] = archived or changed.get("archived", False)
        if added is not None:
            definitions[added["version"]] = added["definition"]
    return workflow_item(row) | {"definition": definitions[row["latest_version"]]}


async def execution_events(
    conn: DictConnection, workspace_id: UUID, execution_id: UUID
) -> list[dict[str, Any]] | None:
    """The execution's stored events (None: no execution of this workspace has this id)."""
    return await _events_of(conn, workspace_id, execution_id, EXECUTION_TOPICS)


async def workflow_events(
    conn: DictConnection, workspace_id: UUID, workflow_id: UUID
) -> list[dict[str, Any]] | None:
    """The workflow's stored events (None: no workflow of this workspace has this id)."""
    return await _events_of(conn, workspace_id, workflow_id, WORKFLOW_TOPICS)


async def _events_of(
    conn: DictConnection, workspace_id: UUID, aggregate_id: UUID, topics: str
) -> list[dict[str, Any]] | None:
    rows = await _events(conn, aggregate_id)
    if not rows or not rows[0]["topic"].startswith(topics):
        return None
    if rows[0]["workspace_id"] != workspace_id:
        return None
    return rows
