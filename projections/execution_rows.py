"""The execution read-model rows (`rm_executions`, `rm_node_runs`) of one projector batch, folded:
each execution and each node run touched by the batch becomes one row, and the batch's rows of
the same shape go out in one statement (`unnest` of one array per column, sent in binary).

A pure-3 execution is 8 events, usually relayed in the same batch. Applied one by one they were
8 statements; folded they are 4 rows (one execution row, three node rows), and a batch of 100
executions is 2 statements. One statement per shape, not one per row (an `executemany`), also
makes the rollups' statement triggers (migration 015) run once per batch. The fold gives the rows
that applying the events in order would give: for each row it tracks both what to insert when
the row does not exist yet and which columns the events set when it does (`ON CONFLICT … DO
UPDATE SET` exactly those). No I/O here: `projections.visibility` executes the statements, and
`projections.states` renders the rows of one execution's events up to a version (time travel)
with the same fold.
Search attributes (recorded in ExecutionStarted) go to `rm_executions.search_attributes` and, one
row each in the column of their type, to `rm_execution_attributes` (migration 012).
A re-run's `rerun_of` (ExecutionStarted) and the node runs it kept from its original (NodeReused:
status completed, `reused` true) go to `rm_executions.rerun_of` and `rm_node_runs.reused`
(migration 020).
`duration_ms`, `error_code` and `failed_node` are generated columns (migration 011): PostgreSQL
derives them from `started_at`, `closed_at` and `error`. `status_position` (migration 014) is the
log position of the event that last set the status, when the caller gives positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import chain, repeat
from typing import Any

from psycopg.types.json import Jsonb

from domain.execution import CLOSED_STATUS, Execution
from domain.search_attributes import AttributeType, parse_time, type_of
from domain.statuses import CallbackStatus, ExecutionStatus, NodeStatus

NODE_EVENTS = (
    Execution.NodeScheduled,
    Execution.NodeReused,
    Execution.NodeStarted,
    Execution.NodeCompleted,
    Execution.NodeFailed,
    Execution.NodeTimedOut,
    Execution.NodeSkipped,
    Execution.NodeCanceled,
)
# Waiting for a slot of the workflow's concurrency limit, and getting one (domain.concurrency).
GATE_STATUS: dict[type, ExecutionStatus] = {
    Execution.ExecutionQueued: ExecutionStatus.QUEUED,
    Execution.ExecutionAdmitted: ExecutionStatus.RUNNING,
}
HANDLES: tuple[type, ...] = (
    Execution.ExecutionStarted,
    *CLOSED_STATUS,
    *GATE_STATUS,
    *NODE_EVENTS,
)

# Each column and its type: a batch's rows go out as one array per column (`unnest`).
_TYPES = {
    "id": "uuid",
    "execution_id": "uuid",
    "workspace_id": "uuid",
    "workflow_id": "uuid",
    "workflow_name": "text",
    "version": "int",
    "status": "text",
    "trigger": "text",
    "input": "jsonb",
    "started_at": "timestamptz",
    "event_version": "int",
    "output": "jsonb",
    "error": "jsonb",
    "closed_at": "timestamptz",
    "callback": "jsonb",
    "search_attributes": "jsonb",
    "status_position": "bigint",
    "name": "text",
    "text_value": "text",
    "num_value": "numeric",
    "time_value": "timestamptz",
    "bool_value": "boolean",
    "node_id": "text",
    "type": "text",
    "attempts": "int",
    "rerun_of": "uuid",
    "reused": "boolean",
}
_EXECUTION_COLUMNS = (
    "id",
    "workspace_id",
    "workflow_id",
    "workflow_name",
    "version",
    "status",
    "trigger",
    "input",
    "started_at",
    "event_version",
    "output",
    "error",
    "closed_at",
    "callback",
    "search_attributes",
    "status_position",
    "rerun_of",
)
_ATTRIBUTE_COLUMNS = (
    "execution_id",
    "name",
    "workspace_id",
    "text_value",
    "num_value",
    "time_value",
    "bool_value",
)
_CLOSE_COLUMNS = ("status", "output", "error", "closed_at", "event_version", "status_position")
_NODE_COLUMNS = (
    "execution_id",
    "node_id",
    "workspace_id",
    "type",
    "status",
    "attempts",
    "started_at",
    "closed_at",
    "error",
    "output",
    "reused",
)
_NODE_KEY = ("execution_id", "node_id")


@dataclass(frozen=True)
class Statement:
    """One statement writing a batch's rows of one shape: `sql` reads them as one array per
    column of `columns` (`unnest`), and `rows` are those rows."""

    sql: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def params(self) -> list[list[Any]]:
        """The arrays the statement's placeholders take, one per column."""
        return [list(column) for column in zip(*self.rows, strict=True)]


def _unnest(columns: tuple[str, ...]) -> str:
    """`unnest(%b::t1[], …) AS u (c1, …)`: a batch's rows as a relation (sent in binary)."""
    arrays = ", ".join(f"%b::{_TYPES[c]}[]" for c in columns)
    return f"unnest({arrays}) AS u ({', '.join(columns)})"


def _insert(table: str, columns: tuple[str, ...], conflict: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT {', '.join(columns)} FROM {_unnest(columns)} {conflict}"
    )


def _update(table: str, sets: tuple[str, ...], keys: tuple[str, ...]) -> str:
    """`UPDATE table SET sets FROM the rows WHERE keys match`: each row's values are `sets`, then
    `keys` (no two rows with the same keys: the fold gives one per key)."""
    return (
        f"UPDATE {table} t SET {', '.join(f'{c} = u.{c}' for c in sets)}"
        f" FROM {_unnest(sets + keys)} WHERE {' AND '.join(f't.{k} = u.{k}' for k in keys)}"
    )


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


@dataclass
class _Row:
    """One row as the batch leaves it: `insert` is the whole row if it did not exist before
    (None: the batch never inserts it), `update` the columns the batch sets if it did."""

    insert: dict[str, Any] | None = None
    update: dict[str, Any] = field(default_factory=dict)

    def upsert(self, values: dict[str, Any], on_conflict: dict[str, Any]) -> None:
        """An `INSERT values ON CONFLICT DO UPDATE SET on_conflict`."""
        if self.insert is None:
            self.insert = dict(values)
        else:
            self.insert.update(on_conflict)
        self.update.update(on_conflict)

    def set(self, columns: dict[str, Any]) -> None:
        """An `UPDATE … SET columns` of the row (nothing if it does not exist)."""
        if self.insert is not None:
            self.insert.update(columns)
        self.update.update(columns)


def _closed_node(e: Any) -> tuple[NodeStatus, Any, Any]:
    """Status, error and output a node's closing event records."""
    error = getattr(e, "error", None)
    if isinstance(e, Execution.NodeCompleted):
        return NodeStatus.COMPLETED, error, e.output
    if isinstance(e, Execution.NodeFailed):
        return NodeStatus.FAILED, error, None
    if isinstance(e, Execution.NodeTimedOut):
        return NodeStatus.TIMED_OUT, error, None
    if isinstance(e, Execution.NodeSkipped):
        return NodeStatus.SKIPPED, error, None
    return NodeStatus.CANCELED, error, None


def _closed_execution(e: Any, position: int | None) -> dict[str, Any]:
    return {
        "status": CLOSED_STATUS[type(e)],
        "output": _json(getattr(e, "output", None)),
        "error": _json(getattr(e, "error", None)),
        "closed_at": e.timestamp,
        "event_version": e.originator_version,
        "status_position": position,
    }


def attribute_values(value: Any) -> tuple[str | None, Decimal | None, datetime | None, bool | None]:
    """A search attribute's value in the column of its type (text, num, time, bool)."""
    kind = type_of(value)
    if kind is AttributeType.TEXT:
        return value, None, None, None
    if kind is AttributeType.TIME:
        return None, None, parse_time(value), None
    if kind is AttributeType.BOOL:
        return None, None, None, value
    return (
        None,
        Decimal(repr(value)) if kind is AttributeType.NUMBER else Decimal(value),
        None,
        None,
    )


def _attribute_rows(e: Any, attributes: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (e.originator_id, name, e.workspace_id, *attribute_values(value))
        for name, value in attributes.items()
    ]


@dataclass
class Folded:
    """The rows a run of events leaves, before they become statements: by execution id, by
    (execution id, node id), and the search attribute rows. An execution whose first event is
    in the run has its whole row in `insert` (time travel renders those:
    `projections.states`)."""

    executions: dict[Any, _Row] = field(default_factory=dict)
    nodes: dict[tuple[Any, str], _Row] = field(default_factory=dict)
    attributes: list[tuple[Any, ...]] = field(default_factory=list)


def fold(events: Iterable[Any], positions: Iterable[int | None] = ()) -> list[Statement]:
    """The statements (each with its rows) that bring the execution read models up to date with
    `events` (in log order; other event types are ignored). `positions`: the events' log
    positions, in the same order (None where unknown)."""
    folded = fold_rows(events, positions)
    statements = _execution_statements(folded.executions) + _node_statements(folded.nodes)
    if folded.attributes:
        statements.append(
            Statement(
                _insert(
                    "rm_execution_attributes",
                    _ATTRIBUTE_COLUMNS,
                    "ON CONFLICT (execution_id, name) DO NOTHING",
                ),
                _ATTRIBUTE_COLUMNS,
                folded.attributes,
            )
        )
    return statements


def fold_rows(events: Iterable[Any], positions: Iterable[int | None] = ()) -> Folded:
    """The rows `events` leave (see `fold`, which writes them)."""
    folded = Folded()
    executions, nodes, attributes = folded.executions, folded.nodes, folded.attributes
    for e, position in zip(events, chain(positions, repeat(None)), strict=False):
        if isinstance(e, Execution.ExecutionStarted):
            # Absent from events recorded before search attributes existed.
            searched = getattr(e, "search_attributes", None) or {}
            attributes += _attribute_rows(e, searched)
            row = executions.setdefault(e.originator_id, _Row())
            callback = None
            if e.callback_url:
                callback = Jsonb(
                    {"url": e.callback_url, "status": CallbackStatus.PENDING, "attempts": 0}
                )
            row.insert = {
                "id": e.originator_id,
                "workspace_id": e.workspace_id,
                "workflow_id": e.workflow_id,
                "workflow_name": e.definition.get("name"),
                "version": e.workflow_version,
                "status": ExecutionStatus.RUNNING,
                "trigger": e.trigger,
                "input": _json(e.input),
                "started_at": e.timestamp,
                "event_version": e.originator_version,
                "output": None,
                "error": None,
                "closed_at": None,
                "callback": callback,
                "search_attributes": _json(searched or None),
                "status_position": position,
                "rerun_of": getattr(e, "rerun_of", None),  # absent before re-runs
            }
        elif type(e) in CLOSED_STATUS:
            executions.setdefault(e.originator_id, _Row()).set(_closed_execution(e, position))
        elif type(e) in GATE_STATUS:
            executions.setdefault(e.originator_id, _Row()).set(
                {
                    "status": GATE_STATUS[type(e)],
                    "event_version": e.originator_version,
                    "status_position": position,
                }
            )
        elif isinstance(e, Execution.NodeScheduled):
            row = nodes.setdefault((e.originator_id, e.node_id), _Row())
            scheduled = {"status": NodeStatus.SCHEDULED, "attempts": e.attempt, "error": None}
            row.upsert(
                {
                    "execution_id": e.originator_id,
                    "node_id": e.node_id,
                    "workspace_id": e.workspace_id,
                    "type": e.node_type,
                    "started_at": e.timestamp,
                    "closed_at": None,
                    "output": None,
                    "reused": False,
                    **scheduled,
                },
                scheduled,
            )
        elif isinstance(e, Execution.NodeReused):
            # A re-run's kept output: the node's only event.
            reused = {
                "status": NodeStatus.COMPLETED,
                "closed_at": e.timestamp,
                "output": _json(e.output),
                "reused": True,
            }
            nodes.setdefault((e.originator_id, e.node_id), _Row()).upsert(
                {
                    "execution_id": e.originator_id,
                    "node_id": e.node_id,
                    "workspace_id": e.workspace_id,
                    "type": e.node_type,
                    "attempts": 0,
                    "started_at": e.timestamp,
                    "error": None,
                    **reused,
                },
                reused,
            )
        elif isinstance(e, Execution.NodeStarted):
            row = nodes.setdefault((e.originator_id, e.node_id), _Row())
            row.set({"status": NodeStatus.RUNNING})
        elif isinstance(e, NODE_EVENTS):
            row = nodes.setdefault((e.originator_id, e.node_id), _Row())
            status, error, output = _closed_node(e)
            if getattr(e, "will_retry", False):
                row.set({"error": _json(error)})
                continue
            closed = {
                "status": status,
                "closed_at": e.timestamp,
                "error": _json(error),
                "output": _json(output),
            }
            # Only a skipped node has no row yet (it was never scheduled); its event carries
            # the type.
            row.upsert(
                {
                    "execution_id": e.originator_id,
                    "node_id": e.node_id,
                    "workspace_id": e.workspace_id,
                    "type": getattr(e, "node_type", ""),
                    "attempts": 0,
                    "started_at": None,
                    "reused": False,
                    **closed,
                },
                closed,
            )
    return folded


def _execution_statements(rows: dict[Any, _Row]) -> list[Statement]:
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for execution_id, row in rows.items():
        if row.insert is None:
            # Closings (`_CLOSE_COLUMNS`), or only a status (queued, admitted): one statement
            # per set of columns.
            columns = tuple(c for c in _CLOSE_COLUMNS if c in row.update)
            updates.setdefault(columns, []).append(
                (*(row.update[c] for c in columns), execution_id)
            )
            continue
        # Started in this batch. The row cannot exist before its first event; should it
        # (a replay), the statements applied one by one would leave the close applied and the
        # callback first set, which is what the conflict clause does.
        key = tuple(sorted(row.update))
        groups.setdefault(key, []).append(tuple(row.insert[c] for c in _EXECUTION_COLUMNS))
    statements: list[Statement] = []
    for updated, values in groups.items():
        sets = [f"{c} = EXCLUDED.{c}" for c in updated]
        sets.append("callback = COALESCE(rm_executions.callback, EXCLUDED.callback)")
        conflict = f"ON CONFLICT (id) DO UPDATE SET {', '.join(sets)}"
        statements.append(
            Statement(
                _insert("rm_executions", _EXECUTION_COLUMNS, conflict), _EXECUTION_COLUMNS, values
            )
        )
    for columns, values in updates.items():
        statements.append(
            Statement(_update("rm_executions", columns, ("id",)), (*columns, "id"), values)
        )
    return statements


def _node_statements(rows: dict[tuple[Any, str], _Row]) -> list[Statement]:
    upserts: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for (execution_id, node_id), row in rows.items():
        key = tuple(sorted(row.update))
        if row.insert is None:
            updates.setdefault(key, []).append(
                (*(row.update[c] for c in key), execution_id, node_id)
            )
        else:
            # On conflict the row takes `update`'s columns from the inserted values: the same,
            # as every event that sets a column before the row's insert sets it again then.
            assert all(row.update[c] is row.insert[c] for c in key), (execution_id, node_id)
            upserts.setdefault(key, []).append(tuple(row.insert[c] for c in _NODE_COLUMNS))
    statements: list[Statement] = []
    for updated, values in upserts.items():
        conflict = (
            f"ON CONFLICT ({', '.join(_NODE_KEY)}) DO UPDATE SET"
            f" {', '.join(f'{c} = EXCLUDED.{c}' for c in updated)}"
        )
        statements.append(
            Statement(_insert("rm_node_runs", _NODE_COLUMNS, conflict), _NODE_COLUMNS, values)
        )
    for updated, values in updates.items():
        statements.append(
            Statement(_update("rm_node_runs", updated, _NODE_KEY), (*updated, *_NODE_KEY), values)
        )
    return statements
