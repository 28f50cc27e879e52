"""`linkflow replay check`, its aggregate half: re-fold every aggregate of the log with the
current code and say which cannot be, or come out other than they should.

What is checked, per aggregate id (events read in (id, version) order, up to the log head):
1. **It folds.** Each stored event decodes with the current code (its topic still resolves to
   a class, its state still deserialises) and its mutator applies (versions run 1, 2, … with
   no gap, the first creates the aggregate, no `apply` raises). A failure names the aggregate,
   its type, the version and topic of the first event that failed, and the error. This is what
   breaks when an event class is renamed or moved without a topic alias, or a mutator starts
   to reject history that earlier code accepted.
2. **It folds the same way twice.** The aggregate is reconstructed again through the event
   store's repository (`repository.get` at its last version: the library's snapshot-free
   reconstruction, each event decoded afresh) and both states are compared attribute by
   attribute. A difference means a mutator is not a pure function of the events: it reads the
   clock, randomness or the environment, or it changes state shared between instances (a
   mutable class attribute, an event's own dict kept and changed later).
3. **It agrees with its read model** (executions, workflows, credentials, API keys; aggregates
   whose events the live projector has all applied): the columns that the aggregate and the
   projector both derive — status, closing time, versions, archived/deleted/revoked, tenancy —
   are compared with the rebuilt read model: two code paths over the same events. (The read
   models hold derived and display data the aggregates do not; those are checked by the
   read-model half, against the live tables.)
States are compared as plain data and reports name attributes, never their values: aggregates
hold sealed credential data and key hashes.

Imported by `gateways.replay_cli` and the tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from psycopg import sql
from pydantic import BaseModel

from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.eventstore import EVENTS_TABLE, EventStore

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FoldFailure:
    """An aggregate that did not re-fold, or came out other than it should."""

    aggregate_id: UUID
    aggregate_type: str
    check: str  # "fold", "second fold" or "read model"
    message: str
    version: int | None = None
    topic: str | None = None

    def describe(self) -> str:
        at = f" at version {self.version} ({self.topic})" if self.version is not None else ""
        return f"{self.aggregate_type} {self.aggregate_id}: {self.check} failed{at}: {self.message}"


@dataclass
class AggregateReport:
    head: int
    events: int = 0
    per_type: dict[str, int] = field(default_factory=dict)  # aggregates folded, by type
    compared: int = 0  # aggregates compared with their read model
    failures: list[FoldFailure] = field(default_factory=list)


def aggregate_type(topic: str) -> str:
    """The aggregate class named by an event topic (`domain.execution:Execution.NodeStarted` →
    `Execution`); the whole topic when it does not have that shape. Pure."""
    _, _, qualname = topic.partition(":")
    owner, dot, _ = qualname.rpartition(".")
    return owner if dot and owner else topic


def plain(value: Any) -> Any:
    """A value as plain data (dicts, lists, scalars) for comparing states. Pure."""
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v) for v in value), key=repr)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {"__class__": type(value).__qualname__, **plain(vars(value))}
    return value


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two plain values first differ (`nodes.fetch.status`), None when equal. Pure."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}{k}"
            found = first_difference(a[k], b[k], f"{path}{k}.")
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}(length)"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}{i}.")
            if found is not None:
                return found
        return None
    return None if a == b else (path.rstrip(".") or "(value)")


def fold(store: EventStore, events: Sequence[LoggedEvent]) -> tuple[Any, FoldFailure | None]:
    """Decode and apply one aggregate's events in order; the aggregate, or the first failure."""
    first = events[0]
    kind = aggregate_type(first.topic)
    aggregate: Any = None
    for e in events:
        try:
            event = store.decode(e.originator_id, e.originator_version, e.topic, e.state)
            aggregate = event.mutate(aggregate)
            if aggregate is None:
                raise ValueError("the event left no aggregate")
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"[:300]
            return None, FoldFailure(
                first.originator_id, kind, "fold", message, e.originator_version, e.topic
            )
    return aggregate, None


def refold(store: EventStore, events: Sequence[LoggedEvent]) -> tuple[Any, FoldFailure | None]:
    """Checks 1 and 2 of the module's docstring for one aggregate (its events, in order).
    Synchronous: the repository reads PostgreSQL (call it in a thread)."""
    aggregate, failure = fold(store, events)
    if failure is not None:
        return None, failure
    first, last = events[0], events[-1]
    kind = type(aggregate).__name__
    try:
        # The library's own reconstruction (its default projector function), never cached.
        again: Aggregate = store.repository.get(
            first.originator_id, version=last.originator_version
        )
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"[:300]
        return None, FoldFailure(first.originator_id, kind, "second fold", message)
    where = first_difference(plain(vars(aggregate)), plain(vars(again)))
    if where is None and aggregate.version != last.originator_version:
        where = "version"
    if where is not None:
        message = f"the two folds differ at {where}"
        return None, FoldFailure(first.originator_id, kind, "second fold", message)
    return aggregate, None


# Check 3: per aggregate type, its read model (table, keyed by `id`) and the columns that the
# aggregate and the projector both derive, as the aggregate says they should be.
def _text(value: Any) -> str | None:
    return None if value is None else str(value)


READ_MODEL_COLUMNS: dict[str, tuple[str, dict[str, Callable[[Any], Any]]]] = {
    "Execution": (
        "rm_executions",
        {
            "workspace_id": lambda a: _text(a.workspace_id),
            "workflow_id": lambda a: _text(a.workflow_id),
            "version": lambda a: a.workflow_version,
            "status": lambda a: _text(a.status),
            "closed_at": lambda a: a.closed_at,
        },
    ),
    "Workflow": (
        "rm_workflows",
        {
            "workspace_id": lambda a: _text(a.workspace_id),
            "name": lambda a: a.name,
            "latest_version": lambda a: a.latest_version,
            "active_version": lambda a: a.active_version,
            "archived": lambda a: a.archived,
        },
    ),
    "Credential": (
        "rm_credentials",
        {
            "workspace_id": lambda a: _text(a.workspace_id),
            "name": lambda a: a.name,
            "type": lambda a: a.type,
            "deleted": lambda a: a.deleted,
        },
    ),
    "ApiKey": (
        "rm_api_keys",
        {
            "workspace_id": lambda a: _text(a.workspace_id),
            "name": lambda a: a.name,
            "role": lambda a: a.role,
            "revoked_at IS NOT NULL": lambda a: a.revoked,
        },
    ),
}


def _read_model_value(column: str, value: Any) -> Any:
    return str(value) if column.endswith("_id") and value is not None else value


async def compare_read_models(
    conn: DictConnection, schema: str, aggregates: Sequence[Any], report: AggregateReport
) -> None:
    """Check 3 for these aggregates against the read models in `schema` (the rebuild)."""
    by_type: dict[str, list[Any]] = {}
    for a in aggregates:
        if type(a).__name__ in READ_MODEL_COLUMNS:
            by_type.setdefault(type(a).__name__, []).append(a)
    for kind, group in by_type.items():
        table, columns = READ_MODEL_COLUMNS[kind]
        selected = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.SQL(c), sql.Identifier(c)) for c in columns
        )
        cur = await conn.execute(
            sql.SQL("SELECT id, {cols} FROM {s}.{t} WHERE id = ANY(%s)").format(
                cols=selected, s=sql.Identifier(schema), t=sql.Identifier(table)
            ),
            ([a.id for a in group],),
        )
        rows = {row["id"]: row for row in await cur.fetchall()}
        for a in group:
            report.compared += 1
            row = rows.get(a.id)
            if row is None:
                report.failures.append(
                    FoldFailure(a.id, kind, "read model", f"{table} has no row for it")
                )
                continue
            differing = [
                c for c, derive in columns.items() if derive(a) != _read_model_value(c, row[c])
            ]
            if differing:
                message = f"{table} disagrees with the aggregate on {', '.join(differing)}"
                report.failures.append(FoldFailure(a.id, kind, "read model", message))


async def aggregate_pages(
    conn: DictConnection, head: int, page: int = 1000
) -> AsyncIterator[list[list[LoggedEvent]]]:
    """Every aggregate's events up to `head`, in (id, version) order, a page of aggregates at a
    time (an aggregate is never split across pages)."""
    query = (
        f"SELECT notification_id, originator_id, originator_version, topic, state"
        f" FROM {EVENTS_TABLE} WHERE notification_id <= %s"
    )
    after: tuple[UUID, int] | None = None
    pending: list[LoggedEvent] = []
    while True:
        if after is None:
            cur = await conn.execute(
                (query + " ORDER BY originator_id, originator_version LIMIT %s").encode(),
                (head, page),
            )
        else:
            cur = await conn.execute(
                (
                    query + " AND (originator_id, originator_version) > (%s, %s)"
                    " ORDER BY originator_id, originator_version LIMIT %s"
                ).encode(),
                (head, *after, page),
            )
        rows = await cur.fetchall()
        events = pending + [
            LoggedEvent(
                r["notification_id"],
                r["originator_id"],
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
            )
            for r in rows
        ]
        groups: list[list[LoggedEvent]] = []
        for e in events:
            if groups and groups[-1][0].originator_id == e.originator_id:
                groups[-1].append(e)
            else:
                groups.append([e])
        if len(rows) < page:
            if groups:
                yield groups
            return
        pending = groups.pop()  # the last aggregate may go on in the next page
        after = (rows[-1]["originator_id"], rows[-1]["originator_version"])
        if groups:
            yield groups
