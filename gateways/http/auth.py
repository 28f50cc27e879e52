"""Who is calling and what they may do. A caller is a `commands.principal.Principal`: a user
(access JWT) or an API key (`lfk_…`), both sent as `Authorization: Bearer` (the SSE routes also
take `?access_token=`, for browsers' EventSource, which cannot send headers). Each workspace route
names the `domain.roles.Action` it performs; `workspace_access` checks it
(`commands.principal.authorise`, over the permission matrix `domain.roles.permits`), and
`execute_with_access` asks the command layer to run a command as the caller
(`CommandBus.execute_as`, which owns the role check and its retries). Once the caller is
known, the request's origin (`infra.origin`) names them as the actor of its events. Imported
by the route modules of `gateways.http`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from aiohttp import web

from commands import lookups
from commands.handlers import NotFound, Result
from commands.identity import API_KEY_PREFIX, Forbidden, RecordApiKeyUse
from commands.models import Command
from commands.principal import Principal, authorise
from domain.roles import Action
from gateways.http.context import container
from gateways.http.errors import ApiError, parse_uuid
from gateways.http.tokens import decode_access_token
from infra.origin import api_key_actor, current_origin, set_origin, user_actor

log = logging.getLogger(__name__)


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


def _bearer(request: web.Request, query_token: bool = False) -> str:
    """The bearer token of `Authorization`; with `query_token`, when that header is absent, the
    `access_token` query parameter (the token never reaches a log line or a metric label: both
    name the route, not the URL)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and query_token and "access_token" in request.query:
        token = request.query["access_token"].strip()
        if not token:
            raise _unauthenticated("the access_token parameter is empty")
        return token
    if not header:
        raise _unauthenticated("an Authorization: Bearer token is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def principal(request: web.Request, query_token: bool = False) -> Principal:
    """The authenticated caller (decoded once a request); 401 if there is none. `query_token`:
    the token may come as `?access_token=` (the SSE routes only)."""
    if PRINCIPAL_KEY in request:
        return request[PRINCIPAL_KEY]
    token = _bearer(request, query_token)
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
        found = Principal(key.id, "api_key", key.workspace_id, key.role)
        _act_as(found)
        await request.app[KEY_USAGE].seen(request, key.id)
    else:
        found = Principal(decode_access_token(c.settings, token))
        _act_as(found)
    request[PRINCIPAL_KEY] = found
    return found


def _act_as(caller: Principal) -> None:
    """The request's events are the caller's from now on (`infra.origin`)."""
    actor = user_actor(caller.id) if caller.is_user else api_key_actor(caller.id)
    set_origin(current_origin().with_actor(actor))


async def current_user(request: web.Request) -> UUID:
    """The calling user's id; 403 for an API key (user-level routes need a person)."""
    caller = await principal(request)
    if not caller.is_user:
        raise ApiError(403, "forbidden", "this route needs a user's access token, not an API key")
    return caller.id


async def workspace_access(request: web.Request, action: Action, query_token: bool = False) -> UUID:
    """Authenticate, then check that the caller may do `action` in the workspace `{ws}` of the
    path (`commands.principal.authorise`): 404 if it is not theirs, 403 `forbidden` if their
    role does not permit it. `query_token`: see `principal`."""
    caller = await principal(request, query_token)
    workspace_id = parse_uuid(request.match_info["ws"], "workspace")
    if caller.is_user:
        role = await container(request).bus.run(lookups.member_role, workspace_id, caller.id)
    else:
        role = caller.key_role(workspace_id)
    request[ROLE_KEY] = authorise(role, action)
    return workspace_id


async def still_permitted(request: web.Request, action: Action, query_token: bool = False) -> bool:
    """Whether the caller of a long-lived request (an SSE stream) may still do `action`: its
    token decoded again (expired, API key revoked) and its role read again (removed, demoted)."""
    request.pop(PRINCIPAL_KEY, None)
    try:
        await workspace_access(request, action, query_token)
    except (ApiError, NotFound, Forbidden):
        return False
    return True


async def execute_with_access(
    request: web.Request, action: Action, build: Callable[[UUID], Awaitable[Command]]
) -> Result:
    """Authenticate, then run the command `await build(workspace_id)` as the caller in the
    workspace `{ws}` of the path (`CommandBus.execute_as`: 404 if it is not theirs, 403
    `forbidden` if their role does not permit `action`, both before `build` runs)."""
    caller = await principal(request)
    workspace_id = parse_uuid(request.match_info["ws"], "workspace")
    return await container(request).bus.execute_as(
        caller, workspace_id, action, lambda: build(workspace_id)
    )


async def actor(request: web.Request) -> UUID:
    """Who the events of this request are recorded as done by (a user or an API key id)."""
    return (await principal(request)).id
