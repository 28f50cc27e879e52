"""Identity and tenancy routes: register, login, `/me`, and the caller's workspaces.
`ROUTES` is the table `app.make_app` registers and `openapi` documents. Imported by
`gateways.http.app` and `gateways.http.openapi`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commands import lookups
from commands.models import CreateWorkspace, RegisterUser
from gateways.http.auth import current_user
from gateways.http.consistency import MIN_POSITION, min_position
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, build, read_json
from gateways.http.routing import Route
from gateways.http.tokens import issue_access_token, new_refresh_token

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


async def login(request: web.Request) -> web.Response:
    body = build(LoginRequest, await read_json(request))
    c = container(request)
    identity = await c.bus.run(lookups.authenticate, body.email, body.password)
    if identity is None:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    access_token, expires_in = issue_access_token(c.settings, UUID(identity["id"]))
    return respond(
        {
            "access_token": access_token,
            "refresh_token": new_refresh_token(),
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
    )


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
        extra_responses={401: "invalid_credentials"},
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
