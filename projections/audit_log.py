"""The workspace event log (`GET /workspaces/{ws}/events`): every event of one workspace, by
position, read from the event store itself (not a projection), with who caused it.

One page is one index range scan (`linkflow_events (workspace_id, notification_id)`, migration
017): `WHERE workspace_id = $ws AND notification_id > $after ORDER BY notification_id LIMIT n`,
the filters (`types`, `aggregate_id`, `actor_id`) applied to the rows the scan meets; only the
page's events are decoded (`projections.queries.history_entry`, the history's rendering).

What is never answered: credential data, sealed or not (`sealed_data` of CredentialCreated and
CredentialUpdated; their `name`, `type` and field names stay), API key hashes (`secret_hash`),
any token or password hash (`token_hash`, `password_hash`: the identity aggregates' events —
users, e-mail index, refresh-token families — belong to no workspace's log anyway) and webhook
tokens (`webhook_token`): `domain.audit_export.SECRET_FIELDS`, what an export leaves out too.
`hash` is the event's link in the workspace's hash chain (`audit_chain`, hex; docs/audit.md),
null until the `audit` role has chained it.

Imported by `gateways.http.routes_audit`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate

import domain.api_key
import domain.credential
import domain.execution
import domain.variables
import domain.webhook
import domain.workflow
import domain.workspace
from domain.audit_export import SECRET_FIELDS
from domain.base import OUTSIDE_WORKSPACE_LOGS, TenantAggregate
from infra.db import DictConnection
from infra.eventstore import EVENTS_TABLE, EventStore
from infra.origin import read_actor
from projections.queries import ENVELOPE, HISTORY_MAX_DEPTH, history_entry

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Fields of event data never answered (see the module's docstring): those an export leaves out.
WITHHELD_FIELDS = SECRET_FIELDS
_DOMAIN_MODULES = (
    domain.api_key,
    domain.credential,
    domain.execution,
    domain.variables,
    domain.webhook,
    domain.workflow,
    domain.workspace,
)


def _event_topics() -> dict[str, list[str]]:
    """Every event type a workspace's log may hold: its name → its stored topics."""
    topics: dict[str, list[str]] = {}
    pending: list[type] = list(TenantAggregate.__subclasses__())
    while pending:
        aggregate = pending.pop()
        pending.extend(aggregate.__subclasses__())
        if aggregate.__module__ in OUTSIDE_WORKSPACE_LOGS:
            continue
        for name, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, Aggregate.Event):
                topic = f"{value.__module__}:{value.__qualname__}"
                topics.setdefault(name, []).append(topic)
    return topics


EVENT_TOPICS: dict[str, list[str]] = _event_topics()
assert _DOMAIN_MODULES  # imported for their aggregates (EVENT_TOPICS)


@dataclass(frozen=True)
class LogFilter:
    """A page's bounds and filters, as the route validated them."""

    after: int = 0
    limit: int = DEFAULT_LIMIT
    types: Sequence[str] = ()  # event type names (keys of EVENT_TOPICS)
    aggregate_id: UUID | None = None
    actor_id: str | None = None


def _statement(f: LogFilter) -> tuple[str, list[Any]]:
    where = ["workspace_id = %s", "notification_id > %s", "notification_id <= %s"]
    params: list[Any] = []
    if f.types:
        where.append("topic = ANY(%s)")
        params.append([t for name in f.types for t in EVENT_TOPICS[name]])
    if f.aggregate_id is not None:
        where.append("originator_id = %s")
        params.append(f.aggregate_id)
    if f.actor_id is not None:
        where.append("(actor ->> 'id' = %s OR actor ->> 'workflow_id' = %s)")
        params.extend([f.actor_id, f.actor_id])
    page = (
        "SELECT notification_id, originator_id, originator_version, topic, state, actor,"
        f" request_id FROM {EVENTS_TABLE} WHERE {' AND '.join(where)}"
        " ORDER BY notification_id LIMIT %s"
    )
    statement = (
        f"SELECT e.*, c.hash FROM ({page}) e"
        " LEFT JOIN audit_chain c ON c.position = e.notification_id ORDER BY e.notification_id"
    )
    return statement, params


async def read_page(
    conn: DictConnection, workspace_id: UUID, f: LogFilter
) -> tuple[list[dict[str, Any]], int]:
    """The page's stored rows (undecoded) and the workspace log's head (its last position),
    read first: the page stops at it, so a page shorter than the limit has seen every event
    up to the head (appends commit in position order, under the table lock)."""
    cur = await conn.execute(
        f"SELECT max(notification_id) AS head FROM {EVENTS_TABLE} WHERE workspace_id = %s",
        (workspace_id,),
    )
    found = await cur.fetchone()
    head = int(found["head"] or 0) if found else 0
    statement, params = _statement(f)
    cur = await conn.execute(
        statement,  # type: ignore[arg-type]
        [workspace_id, f.after, head, *params, f.limit],
    )
    return await cur.fetchall(), head


def _aggregate_type(topic: str) -> str:
    qualname = topic.rpartition(":")[2]
    return qualname.partition(".")[0]


class _Unknown(Exception):
    """A transcoded value of a type the fast rendering does not know."""


def _plain(value: Any) -> Any:
    """A value the event store's transcoder encoded (`{"_type_": …, "_data_": …}`), as the
    history renders it (`queries.history_entry`: a UUID as text, a datetime in ISO form, a
    decimal as its text); `value` itself when it is no such object."""
    if isinstance(value, dict) and len(value) == 2 and "_type_" in value and "_data_" in value:
        kind, data = value["_type_"], value["_data_"]
        if kind == "uuid_hex":
            return str(UUID(data))
        if kind in ("datetime_iso", "decimal_str"):
            return data  # the transcoder stored isoformat() / str(): what rendering gives
        raise _Unknown(kind)
    return value


def _plain_deep(value: Any) -> Any:
    """`_plain` applied at every depth (inner values first, as a JSON decoder's hook would)."""
    if isinstance(value, dict):
        return _plain({k: _plain_deep(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_plain_deep(v) for v in value]
    return value


def _decoded(state: bytes) -> Any:
    """The stored event's JSON with every transcoded value made plain. Most events hold
    transcoded values only at the top level (ids, the timestamp): when the count of
    `"_type_"` keys in the bytes is the count found there, nothing deeper is walked."""
    data = orjson.loads(state)
    if not isinstance(data, dict):
        return data
    expected = state.count(b'"_type_"')
    found = 0
    for key, value in data.items():
        if isinstance(value, dict) and "_type_" in value:
            data[key] = _plain(value)
            found += 1
    return data if found == expected else _plain_deep(data)


# orjson reads an integer beyond 64 bits as a float, `json` as the integer: such events (and,
# to be sure, any with 19 digits in a row, in a string or not) are decoded the slow way.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def fast_entry(row: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry of a stored event read straight from its JSON (orjson), as
    `queries.history_entry` renders it by decoding the domain event — or None when this
    cannot be sure to give the same (an unknown transcoded type, JSON that orjson refuses,
    19 digits in a row, which may be an integer orjson would read as a float, or an event that
    may be nested too deeply to render: more brackets than HISTORY_MAX_DEPTH). The tests
    compare the two on every kind of event (tests/integration/test_audit_log.py)."""
    state = bytes(row["state"])
    if state.count(b"{") + state.count(b"[") > HISTORY_MAX_DEPTH or _LONG_DIGITS.search(state):
        return None
    try:
        data = _decoded(state)
    except (_Unknown, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("timestamp"), str):
        return None
    recorded_at = data["timestamp"]
    for key in ENVELOPE:
        data.pop(key, None)
    return {
        "workspace_id": data.get("workspace_id"),
        "version": row["originator_version"],
        "type": row["topic"].rpartition(":")[2].rpartition(".")[2],
        "recorded_at": recorded_at,
        "data": data,
    }


def render(store: EventStore, row: dict[str, Any]) -> dict[str, Any]:
    """One event of the log as answered (CPU only: run it off the event loop for a page)."""
    entry = fast_entry(row) or history_entry(store, row["originator_id"], row)
    entry.pop("workspace_id", None)
    data = entry["data"]
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in WITHHELD_FIELDS}
    return {
        "position": row["notification_id"],
        "aggregate_id": str(row["originator_id"]),
        "aggregate_type": _aggregate_type(row["topic"]),
        "version": entry["version"],
        "type": entry["type"],
        "recorded_at": entry["recorded_at"],
        "actor": read_actor(row["actor"]),
        "request_id": row["request_id"],
        "data": data,
        "hash": row["hash"].hex() if row["hash"] is not None else None,
    }


def page(store: EventStore, rows: list[dict[str, Any]], head: int, f: LogFilter) -> dict[str, Any]:
    """The answer: the page's events, where the next page starts (the head, once the page
    has read everything up to it), and the log's head."""
    items = [render(store, row) for row in rows]
    full = len(items) == f.limit
    next_after = items[-1]["position"] if full else max(head, f.after)
    return {"items": items, "next_after": next_after, "head": head}


def encode_page(answer: dict[str, Any]) -> bytes:
    """The answer as its JSON body: orjson encodes a page of 1,000 events several times faster
    than `json`; what it cannot encode (an integer beyond 64 bits in an event's data) goes
    through `json`."""
    try:
        return orjson.dumps(answer)
    except TypeError:
        return json.dumps(answer, separators=(",", ":")).encode()


def page_body(store: EventStore, rows: list[dict[str, Any]], head: int, f: LogFilter) -> bytes:
    """`page` encoded (CPU only: run it off the event loop)."""
    return encode_page(page(store, rows, head, f))
