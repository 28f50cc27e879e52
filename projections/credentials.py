"""The credential read model `rm_credentials`: metadata only (name, type, field names, times),
never the data. `HANDLERS` is merged into the visibility projector's; the queries serve the
credentials API, always filtered by workspace. Imported by `projections.visibility` and
`gateways/`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from domain.credential import Credential
from infra.db import DictConnection
from infra.eventlog import LoggedEvent

TABLE = "rm_credentials"


async def _created(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "INSERT INTO rm_credentials (id, workspace_id, name, type, fields, created_at,"
        " updated_at, event_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (
            e.originator_id,
            e.workspace_id,
            e.name,
            e.type,
            Jsonb(e.fields),
            e.timestamp,
            e.timestamp,
            e.originator_version,
        ),
    )


async def _updated(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    """New data; a deleted credential whose name is reused comes back as created now."""
    await conn.execute(
        "UPDATE rm_credentials SET type = %s, fields = %s, updated_at = %s,"
        " created_at = CASE WHEN deleted THEN %s ELSE created_at END, deleted = false,"
        " event_version = %s WHERE id = %s AND event_version < %s",
        (
            e.type,
            Jsonb(e.fields),
            e.timestamp,
            e.timestamp,
            e.originator_version,
            e.originator_id,
            e.originator_version,
        ),
    )


async def _deleted(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "UPDATE rm_credentials SET deleted = true, updated_at = %s, event_version = %s"
        " WHERE id = %s AND event_version < %s",
        (e.timestamp, e.originator_version, e.originator_id, e.originator_version),
    )


HANDLERS: dict[type, Callable[[DictConnection, LoggedEvent, Any], Awaitable[None]]] = {
    Credential.CredentialCreated: _created,
    Credential.CredentialUpdated: _updated,
    Credential.CredentialDeleted: _deleted,
}


def _iso(value: datetime) -> str:
    return value.isoformat()


def _credential(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "type": row["type"],
        "fields": row["fields"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


async def list_credentials(conn: DictConnection, workspace_id: UUID) -> list[dict[str, Any]]:
    """The workspace's credentials, by name."""
    cur = await conn.execute(
        "SELECT * FROM rm_credentials WHERE workspace_id = %s AND NOT deleted ORDER BY name",
        (workspace_id,),
    )
    return [_credential(row) for row in await cur.fetchall()]


async def get_credential(
    conn: DictConnection, workspace_id: UUID, credential_id: UUID
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT * FROM rm_credentials WHERE workspace_id = %s AND id = %s AND NOT deleted",
        (workspace_id, credential_id),
    )
    row = await cur.fetchone()
    return _credential(row) if row else None
