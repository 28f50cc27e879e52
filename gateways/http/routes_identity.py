"""Identity routes: register, login (throttled), refresh, logout, `/me`, and the caller's
workspaces.
`ROUTES` is the table `app.make_app` registers and `openapi` documents. Imported by
`gateways.http.app` and `gateways.http.openapi`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commands import lookups
from commands.identity import EndSession, RefreshRefused, RefreshSession, StartSession
from commands.models import CreateWorkspace, RegisterUser
from gateways.http.auth import current_user
from gateways.http.consistency import MIN_POSITION, min_position
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, build, read_json
from gateways.http.routing import Route
from gateways.http.throttle import LoginThrottle
from gateways.http.tokens import issue_access_token

PREFIX = "/api/v1"


class LoginRequest(BaseModel):
    """`POST /auth/login`."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


async def register(request: web.Request) -> web.Response:
    cmd = build(RegisterUser, await read_json(request))
    result = await container(request).bus.execute(cmd)
    return respond(result.fields | {"position": result.position}, status=201)


class RefreshRequest(BaseModel):
    """`POST /auth/refresh` and `POST /auth/logout`."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=512)


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def _token_pair(request: web.Request, user_id: UUID, refresh_token: str) -> web.Response:
    access_token, expires_in = issue_access_token(container(request).settings, user_id)
    return respond(
        {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        },
        headers={"Cache-Control": "no-store"},
    )


async def login(request: web.Request) -> web.Response:
    body = build(LoginRequest, await read_json(request))
    c = container(request)
    throttle = LoginThrottle(c.redis, c.settings)
    address = _client_address(request)
    await throttle.check(body.email, address)
    identity = await c.bus.run(lookups.authenticate, body.email, body.password)
    if identity is None:
        await throttle.failed(body.email, address)
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    await throttle.succeeded(body.email, address)
    user_id = UUID(identity["id"])
    session = await c.bus.execute(
        StartSession(user_id=user_id, ttl_s=c.settings.refresh_token_ttl_s)
    )
    return await _token_pair(request, user_id, session.fields["refresh_token"])


def _refused(exc: RefreshRefused) -> ApiError:
    return ApiError(401, "invalid_refresh_token", f"the refresh token is {exc.outcome}")


async def refresh(request: web.Request) -> web.Response:
    body = build(RefreshRequest, await read_json(request))
    c = container(request)
    cmd = RefreshSession(refresh_token=body.refresh_token, ttl_s=c.settings.refresh_token_ttl_s)
    try:
        session = await c.bus.execute(cmd)
    except RefreshRefused as exc:
        raise _refused(exc) from None
    return await _token_pair(
        request, UUID(session.fields["user_id"]), session.fields["refresh_token"]
    )


async def logout(request: web.Request) -> web.Response:
    body = build(RefreshRequest, await read_json(request))
    try:
        await container(request).bus.execute(EndSession(refresh_token=body.refresh_token))
    except RefreshRefused as exc:
        raise _refused(exc) from None
    return web.Response(status=204)


async def _profile(request: web.Request) -> dict[str, Any]:
    user_id = await current_user(request)
    profile = await container(request).bus.run(lookups.user_profile, user_id)
    if profile is None:
        raise ApiError(404, "not_found", "user not found")
    return profile


async def me(request: web.Request) -> web.Response:
    return respond(await _profile(request))


async def create_workspace(request: web.Request) -> web.Response:
    user_id = await current_user(request)
    cmd = build(CreateWorkspace, await read_json(request), actor_id=user_id)
    result = await container(request).bus.execute(cmd)
    return respond(
        result.fields | {"position": result.position},
        status=201,
        headers={"Location": f"{PREFIX}/workspaces/{result.fields['id']}"},
    )


async def list_workspaces(request: web.Request) -> web.Response:
    await current_user(request)
    min_position(request)  # validated only: the list is read from the write model, always current
    profile = await _profile(request)
    return respond(profile["workspaces"])


ROUTES: list[Route] = [
    Route(
        "POST",
        f"{PREFIX}/auth/register",
        register,
        "Register a user (with a personal workspace the user owns)",
        status=201,
        body=RegisterUser,
        auth=False,
        tag="identity",
        extra_responses={409: "email_taken: a user with this email exists"},
    ),
    Route(
        "POST",
        f"{PREFIX}/auth/login",
        login,
        "Log in: an access token (JWT) and a refresh token",
        body=LoginRequest,
        auth=False,
        tag="identity",
        extra_responses={
            401: "invalid_credentials",
            429: "too_many_attempts: too many failed logins (see Retry-After)",
        },
    ),
    Route(
        "POST",
        f"{PREFIX}/auth/refresh",
        refresh,
        "Exchange a refresh token for a new pair (the old one stops working; re-using a rotated"
        " token revokes its whole family)",
        body=RefreshRequest,
        auth=False,
        tag="identity",
        extra_responses={401: "invalid_refresh_token"},
    ),
    Route(
        "POST",
        f"{PREFIX}/auth/logout",
        logout,
        "Revoke a refresh token and its family",
        status=204,
        body=RefreshRequest,
        auth=False,
        tag="identity",
        extra_responses={401: "invalid_refresh_token"},
    ),
    Route("GET", f"{PREFIX}/me", me, "The caller and their workspaces", tag="identity"),
    Route(
        "POST",
        f"{PREFIX}/workspaces",
        create_workspace,
        "Create a workspace (the caller becomes its owner)",
        status=201,
        body=CreateWorkspace,
        server_fields=("actor_id",),
        tag="workspaces",
    ),
    Route(
        "GET",
        f"{PREFIX}/workspaces",
        list_workspaces,
        "The caller's workspaces with the caller's role in each",
        params=(MIN_POSITION,),
        tag="workspaces",
    ),
]
