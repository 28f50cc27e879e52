"""Synchronous reads of the event log and the audit tables for `linkflow audit verify` and
`linkflow audit export` (psycopg 3, server-side cursors in binary, one REPEATABLE READ snapshot).

The log and the recorded chain are read as two position-ordered cursors that the caller merges
(no join: the log is read from `linkflow_events` itself). Imported by `gateways.audit_cli`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from domain.audit_chain import GENESIS, Window
from infra.eventstore import EVENTS_TABLE
from infra.settings import Settings

FETCH = 10_000

# (position, aggregate id, version, topic, state, actor JSON text, request id)
LogRow = tuple[int, str, int, str, bytes, str | None, str | None]
# (position, workspace id, hash)
ChainRow = tuple[int, str, bytes]


def connect(settings: Settings) -> psycopg.Connection[Any]:
    conn = psycopg.connect(settings.conninfo)
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return conn


def _stream(conn: psycopg.Connection[Any], name: str, query: str, params: Any) -> Iterator[Any]:
    with conn.cursor(name=name, binary=True) as cur:
        cur.itersize = FETCH
        cur.execute(query, params)
        while rows := cur.fetchmany(FETCH):
            yield from rows


def log_rows(
    conn: psycopg.Connection[Any], workspace: str | None = None, after: int = 0
) -> Iterator[LogRow]:
    """The log's events in position order; with `workspace`, only events whose stored bytes
    mention it (a superset of its events: the caller checks each event's workspace)."""
    query = (
        "SELECT notification_id, originator_id::text, originator_version, topic, state,"
        f" actor::text, request_id FROM {EVENTS_TABLE} WHERE notification_id > %s"
    )
    params: list[Any] = [after]
    if workspace is not None:
        query += " AND position(%s::bytea in state) > 0"
        params.append(workspace.encode())
    return _stream(conn, "audit_log", query + " ORDER BY notification_id", params)


def chain_rows(conn: psycopg.Connection[Any], workspace: str | None = None) -> Iterator[ChainRow]:
    query = "SELECT position, workspace_id::text, hash FROM audit_chain"
    params: list[Any] = []
    if workspace is not None:
        query += " WHERE workspace_id = %s"
        params.append(workspace)
    return _stream(conn, "audit_record", query + " ORDER BY position", params)


def heads(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(the log's highest position, the recorded chain's highest position)."""
    row = conn.execute(
        f"SELECT (SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}),"
        " (SELECT coalesce(max(position), 0) FROM audit_chain)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def checkpoints(
    conn: psycopg.Connection[Any],
    workspace: str | None = None,
    after: int = 0,
    until: int | None = None,
) -> list[dict[str, Any]]:
    query = (
        "SELECT workspace_id::text AS workspace_id, position, chain_hash, signed_at, key_id,"
        " signature FROM audit_checkpoints WHERE position > %s"
    )
    params: list[Any] = [after]
    if workspace is not None:
        query += " AND workspace_id = %s"
        params.append(workspace)
    if until is not None:
        query += " AND position <= %s"
        params.append(until)
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query + " ORDER BY position, workspace_id", params)
        return cur.fetchall()


def public_keys(conn: psycopg.Connection[Any]) -> dict[str, bytes]:
    return {
        row[0]: bytes(row[1])
        for row in conn.execute("SELECT key_id, public_key FROM audit_keys").fetchall()
    }


def window(
    conn: psycopg.Connection[Any], workspace: str, position: int, size: int = 1000
) -> Window:
    """The recorded chain of `workspace` around `position` (see `domain.audit_chain.Window`)."""
    before = conn.execute(
        "SELECT position, hash FROM audit_chain WHERE workspace_id = %s AND position < %s"
        " ORDER BY position DESC LIMIT %s",
        (workspace, position, size + 1),
    ).fetchall()
    after = conn.execute(
        "SELECT position, hash FROM audit_chain WHERE workspace_id = %s AND position >= %s"
        " ORDER BY position LIMIT %s",
        (workspace, position, size),
    ).fetchall()
    rows = [(int(p), bytes(h)) for p, h in reversed(before)] + [
        (int(p), bytes(h)) for p, h in after
    ]
    if len(before) > size:
        return rows[0][1], rows[1:]
    return GENESIS, rows


def chain_before(conn: psycopg.Connection[Any], workspace: str, position: int) -> bytes:
    """The recorded chain hash of `workspace` at or before `position` (GENESIS: none)."""
    row = conn.execute(
        "SELECT hash FROM audit_chain WHERE workspace_id = %s AND position <= %s"
        " ORDER BY position DESC LIMIT 1",
        (workspace, position),
    ).fetchone()
    return bytes(row[0]) if row else GENESIS


def workspace_rows(
    conn: psycopg.Connection[Any], workspace: str, after: int, until: int | None
) -> Iterator[
    tuple[int, bytes, str | None, int | None, str | None, bytes | None, str | None, str | None]
]:
    """A workspace's recorded chain rows in (after, until] with the log's event at each
    position (None fields when the log has none): (position, recorded hash, aggregate id,
    version, topic, state, actor, request id)."""
    query = (
        "SELECT c.position, c.hash, e.originator_id::text, e.originator_version, e.topic,"
        f" e.state, e.actor::text, e.request_id FROM audit_chain c LEFT JOIN {EVENTS_TABLE} e"
        " ON e.notification_id = c.position WHERE c.workspace_id = %s AND c.position > %s"
    )
    params: list[Any] = [workspace, after]
    if until is not None:
        query += " AND c.position <= %s"
        params.append(until)
    return _stream(conn, "audit_export", query + " ORDER BY c.position", params)
