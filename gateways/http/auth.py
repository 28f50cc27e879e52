"""Who is calling and what they may do: the Bearer access token, workspace membership and the
role matrix (`permits`, the one place that decides). Imported by the route modules of
`gateways.http`.
"""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from commands import lookups
from gateways.http.context import container
from gateways.http.errors import ApiError, parse_uuid
from gateways.http.tokens import decode_access_token

ROLES = ("owner", "admin", "member", "viewer")
_WRITERS = frozenset({"owner", "admin", "member"})
USER_KEY = web.RequestKey("user_id", UUID)


def permits(role: str, write: bool) -> bool:
    """The RBAC matrix: every member may read; owners, admins and members may also write
    workflows and executions; viewers only read."""
    return role in _WRITERS if write else role in ROLES


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})


async def current_user(request: web.Request) -> UUID:
    """The caller's user id from `Authorization: Bearer <access token>` (decoded once a request)."""
    if USER_KEY in request:
        return request[USER_KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthenticated("an Authorization: Bearer token is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
    user_id = decode_access_token(container(request).settings, token.strip())
    request[USER_KEY] = user_id
    return user_id


async def require_member(
    request: web.Request, user_id: UUID, workspace_id: UUID, write: bool
) -> str:
    """The user's role in the workspace. 404 if not a member (existence is not revealed),
    403 `forbidden` if the role does not permit the access."""
    role = await container(request).bus.run(lookups.member_role, workspace_id, user_id)
    if role is None:
        raise ApiError(404, "not_found", "workspace not found")
    if not permits(role, write):
        raise ApiError(403, "forbidden", f"the role {role!r} may not do this")
    return role


async def workspace_access(request: web.Request, write: bool) -> UUID:
    """Authenticate, then check membership of the workspace `{ws}` in the path; its id."""
    user_id = await current_user(request)
    workspace_id = parse_uuid(request.match_info["ws"], "workspace")
    await require_member(request, user_id, workspace_id, write)
    return workspace_id
