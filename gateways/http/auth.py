"""Who is calling and what they may do. A caller is a `Principal`: a user (access JWT) or an
API key (`lfk_…`), both sent as `Authorization: Bearer`. Each workspace route names the
`domain.roles.Action` it performs; `workspace_access` checks it against the permission matrix
(`domain.roles.permits`, the one place that decides). Imported by the route modules of
`gateways.http`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from aiohttp import web

from commands import lookups
from commands.bus import MAX_CONFLICT_RETRIES, CommandConflict
from commands.handlers import Result
from commands.identity import API_KEY_PREFIX, RecordApiKeyUse
from commands.models import Command
from domain.roles import Action, permits
from gateways.http.context import container
from gateways.http.errors import ApiError, parse_uuid
from gateways.http.tokens import decode_access_token
from infra.recorder import StaleRead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """The caller: a user, or an API key bound to one workspace with one role."""

    id: UUID  # the user id, or the API key id
    kind: str = "user"  # "user" | "api_key"
    workspace_id: UUID | None = None  # API keys only
    role: str | None = None  # API keys only

    @property
    def is_user(self) -> bool:
        return self.kind == "user"


class KeyUsage:
    """Records that an API key was used (`ApiKeyUsed`), at most once a minute per key and
    process, so the list can show a last-used time without an event per request."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._recorded: dict[UUID, float] = {}

    async def seen(self, request: web.Request, key_id: UUID) -> None:
        at = time.monotonic()
        if at - self._recorded.get(key_id, -self.every_s) < self.every_s:
            return
        self._recorded[key_id] = at
        try:
            await container(request).bus.execute(RecordApiKeyUse(key_id=key_id))
        except Exception:  # a missed last-used time must not refuse the request
            log.warning("could not record api key use", extra={"key_id": str(key_id)})


KEY_USAGE: web.AppKey[KeyUsage] = web.AppKey("key_usage", KeyUsage)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
ROLE_KEY = web.RequestKey("role", str)


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthenticated("an Authorization: Bearer token is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def principal(request: web.Request) -> Principal:
    """The authenticated caller (decoded once a request); 401 if there is none."""
    if PRINCIPAL_KEY in request:
        return request[PRINCIPAL_KEY]
    token = _bearer(request)
    c = container(request)
    if token.startswith(API_KEY_PREFIX):
        key = await c.bus.run(lookups.authenticate_api_key, token)
        if key is None:
            raise ApiError(
                401,
                "invalid_token",
                "the API key is invalid or revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        await request.app[KEY_USAGE].seen(request, key.id)
        found = Principal(key.id, "api_key", key.workspace_id, key.role)
    else:
        found = Principal(decode_access_token(c.settings, token))
    request[PRINCIPAL_KEY] = found
    return found


async def current_user(request: web.Request) -> UUID:
    """The calling user's id; 403 for an API key (user-level routes need a person)."""
    caller = await principal(request)
    if not caller.is_user:
        raise ApiError(403, "forbidden", "this route needs a user's access token, not an API key")
    return caller.id


def _key_role(key: Principal, workspace_id: UUID) -> str | None:
    """An API key's role: only in the workspace it belongs to."""
    return key.role if key.workspace_id == workspace_id else None


async def role_in(request: web.Request, caller: Principal, workspace_id: UUID) -> str:
    """The caller's role in the workspace; 404 when it is not theirs (existence not revealed)."""
    if not caller.is_user:
        role = _key_role(caller, workspace_id)
    else:
        role = await container(request).bus.run(lookups.member_role, workspace_id, caller.id)
    if role is None:
        raise ApiError(404, "not_found", "workspace not found")
    return role


async def workspace_access(request: web.Request, action: Action) -> UUID:
    """Authenticate, then check that the caller may do `action` in the workspace `{ws}` of the
    path: 404 if it is not theirs, 403 `forbidden` if their role does not permit it."""
    caller = await principal(request)
    workspace_id = parse_uuid(request.match_info["ws"], "workspace")
    _permit(request, await role_in(request, caller, workspace_id), action)
    return workspace_id


def _permit(request: web.Request, role: str, action: Action) -> None:
    if not permits(role, action):
        raise ApiError(403, "forbidden", f"the role {role!r} may not do this ({action.value})")
    request[ROLE_KEY] = role


async def execute_with_access(
    request: web.Request, action: Action, build: Callable[[UUID], Awaitable[Command]]
) -> Result:
    """`workspace_access`, then the command `await build(workspace_id)`, without asking
    PostgreSQL for the caller's role: it comes from the workspace as this process holds it, and
    the command's save checks that the workspace has not changed since (`lookups.held_role`).
    If it has, the role is read again and the command runs again (503 after
    `MAX_CONFLICT_RETRIES`)."""
    caller = await principal(request)
    workspace_id = parse_uuid(request.match_info["ws"], "workspace")
    c = container(request)
    bus = c.bus
    command: Command | None = None
    for _ in range(MAX_CONFLICT_RETRIES):
        reads: dict[UUID, int] = {}
        if not caller.is_user:
            role = _key_role(caller, workspace_id)
        else:
            held = lookups.held_role(c.store, workspace_id, caller.id, blocking=False)
            if held is None or held[0] is None or not permits(held[0], action):
                # Not held yet, or a refusal (decided on a fresh read: no save checks it).
                c.store.forget([workspace_id])
                held = await bus.run(lookups.held_role, workspace_id, caller.id)
            role, version = held or (None, 0)
            reads[workspace_id] = version
        if role is None:
            raise ApiError(404, "not_found", "workspace not found")
        _permit(request, role, action)
        command = command or await build(workspace_id)
        try:
            return await bus.execute(command, reads)
        except StaleRead:
            continue  # the bus forgot the workspace: the next turn reads it again
    raise CommandConflict(type(command).__name__)


async def actor(request: web.Request) -> UUID:
    """Who the events of this request are recorded as done by (a user or an API key id)."""
    return (await principal(request)).id
