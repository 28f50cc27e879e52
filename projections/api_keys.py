"""The API-key read model (`rm_api_keys`): what the key list shows — name, role, creation,
last use, revocation; never a secret. Its handlers run inside the visibility projector; the
query is used by the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from domain.api_key import ApiKey
from infra.db import DictConnection
from infra.eventlog import LoggedEvent

TABLES = ("rm_api_keys",)


async def _created(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "INSERT INTO rm_api_keys (id, workspace_id, name, role, created_by, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (e.originator_id, e.workspace_id, e.name, e.role, e.created_by, e.timestamp),
    )


async def _used(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "UPDATE rm_api_keys SET last_used_at = GREATEST(last_used_at, %s) WHERE id = %s",
        (e.timestamp, e.originator_id),
    )


async def _revoked(conn: DictConnection, logged: LoggedEvent, e: Any) -> None:
    await conn.execute(
        "UPDATE rm_api_keys SET revoked_at = %s WHERE id = %s", (e.timestamp, e.originator_id)
    )


HANDLERS: dict[type, Callable[[DictConnection, LoggedEvent, Any], Awaitable[None]]] = {
    ApiKey.ApiKeyCreated: _created,
    ApiKey.ApiKeyUsed: _used,
    ApiKey.ApiKeyRevoked: _revoked,
}


async def list_api_keys(conn: DictConnection, workspace_id: UUID) -> list[dict[str, Any]]:
    """The workspace's keys that are not revoked, newest first."""
    cur = await conn.execute(
        "SELECT * FROM rm_api_keys WHERE workspace_id = %s AND revoked_at IS NULL"
        " ORDER BY created_at DESC, id",
        (workspace_id,),
    )
    return [
        {
            "id": str(row["id"]),
            "name": row["name"],
            "role": row["role"],
            "created_by": str(row["created_by"]),
            "created_at": row["created_at"].isoformat(),
            "last_used_at": row["last_used_at"].isoformat() if row["last_used_at"] else None,
        }
        for row in await cur.fetchall()
    ]
