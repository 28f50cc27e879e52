"""The audit chain's signed checkpoints and the keys that sign them (docs/audit.md):

- `GET /api/v1/workspaces/{ws}/audit/checkpoints?after=&limit=` — the workspace's checkpoints by
  position `[{position, chain_hash, signed_at, key_id, signature}]` (hex chain hash, base64
  signature); `audit.read` (owner, admin, auditor), another workspace's is 404. Pages: `after`
  (a position, default 0) and `limit` (1..1,000, default 1,000); the next page starts after the
  last position answered.
- `GET /api/v1/audit/keys` — the public keys `[{key_id, algorithm, public_key}]`, old ones too;
  no authentication (an auditor checks signatures with them).

`ROUTES` is registered by `gateways.http.app`. Imported by `gateways.http.app`.
"""

from __future__ import annotations

from aiohttp import web

from domain.audit_signing import b64, signed_at_text
from domain.roles import Action
from gateways.http.auth import workspace_access
from gateways.http.context import container, respond
from gateways.http.errors import invalid
from gateways.http.routing import Param, Route
from infra.audit_keys import list_keys

MAX_LIMIT = 1000
MAX_POSITION = 2**63 - 1


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise invalid(name, f"must be an integer {low}..{high}")
    return value


async def list_checkpoints(request: web.Request) -> web.Response:
    workspace_id = await workspace_access(request, Action.READ_AUDIT)
    after = _int(request, "after", 0, 0, MAX_POSITION)
    limit = _int(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    async with container(request).pool.connection() as conn:
        cur = await conn.execute(
            "SELECT position, chain_hash, signed_at, key_id, signature FROM audit_checkpoints"
            " WHERE workspace_id = %s AND position > %s ORDER BY position LIMIT %s",
            (workspace_id, after, limit),
        )
        rows = await cur.fetchall()
        await conn.commit()
    return respond(
        [
            {
                "position": row["position"],
                "chain_hash": bytes(row["chain_hash"]).hex(),
                "signed_at": signed_at_text(row["signed_at"]),
                "key_id": row["key_id"],
                "signature": b64(bytes(row["signature"])),
            }
            for row in rows
        ]
    )


async def audit_keys(request: web.Request) -> web.Response:
    async with container(request).pool.connection() as conn:
        keys = await list_keys(conn)
        await conn.commit()
    return respond(
        [
            {"key_id": k["key_id"], "algorithm": k["algorithm"], "public_key": k["public_key"]}
            for k in keys
        ]
    )


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/workspaces/{ws}/audit/checkpoints",
        list_checkpoints,
        "The workspace's signed checkpoints of its audit chain, by position: [{position,"
        " chain_hash (hex), signed_at, key_id, signature (base64 Ed25519 over the canonical"
        " JSON of {chain_hash, position, signed_at, workspace_id})}]; owners, admins, auditors",
        params=(
            Param("after", {"type": "integer", "minimum": 0}, "checkpoints after this position"),
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": MAX_LIMIT},
                "at most this many",
            ),
        ),
        extra_responses={422: "after or limit out of range"},
        tag="audit",
    ),
    Route(
        "GET",
        "/api/v1/audit/keys",
        audit_keys,
        "The Ed25519 public keys that sign audit checkpoints (older ones too):"
        " [{key_id, algorithm, public_key (base64, 32 bytes)}]",
        auth=False,
        tag="audit",
    ),
]
