"""Access-management routes of a workspace: members and their roles, API keys, and deleting the
workspace. Each names its `domain.roles.Action`; changes that touch an owner are further checked
by the command (`domain.roles.may_change_member`). `ROUTES` is registered by `app.make_app`.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commands import identity as cmds
from commands import lookups
from commands.handlers import NotFound, Result
from domain.roles import Action
from gateways.http.auth import ROLE_KEY, actor, workspace_access
from gateways.http.consistency import MIN_POSITION, answer_read, min_position
from gateways.http.context import container, respond
from gateways.http.errors import build, invalid, parse_uuid, read_json
from gateways.http.routing import Route
from projections.api_keys import list_api_keys

WS = "/api/v1/workspaces/{ws}"
RoleName = Literal["owner", "admin", "member", "viewer", "auditor"]


class MemberRequest(BaseModel):
    """`POST …/members`."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: RoleName


class RoleRequest(BaseModel):
    """`PATCH …/members/{user_id}`."""

    model_config = ConfigDict(extra="forbid")

    role: RoleName


class ApiKeyRequest(BaseModel):
    """`POST …/api-keys`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: RoleName


def _answer(result: Result, status: int = 200) -> web.Response:
    return respond(result.fields | {"position": result.position}, status=status)


def _user_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["user_id"], "member")


# ---------------------------------------------------------------- members


async def list_members(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    min_position(request)  # validated only: members are read from the write model
    return respond(await container(request).bus.run(lookups.workspace_members, ws))


async def add_member(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_MEMBERS)
    body = build(MemberRequest, await read_json(request))
    cmd = cmds.AddMember(
        workspace_id=ws, actor_role=request[ROLE_KEY], email=body.email, role=body.role
    )
    try:
        result = await container(request).bus.execute(cmd)
    except NotFound as exc:
        if exc.kind != "user":
            raise
        raise invalid("email", "no registered user has this e-mail address") from None
    return _answer(result, 201)


async def change_member_role(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_MEMBERS)
    body = build(RoleRequest, await read_json(request))
    cmd = cmds.ChangeMemberRole(
        workspace_id=ws, actor_role=request[ROLE_KEY], user_id=_user_id(request), role=body.role
    )
    return _answer(await container(request).bus.execute(cmd))


async def remove_member(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_MEMBERS)
    cmd = cmds.RemoveMember(
        workspace_id=ws, actor_role=request[ROLE_KEY], user_id=_user_id(request)
    )
    await container(request).bus.execute(cmd)
    return web.Response(status=204)


async def delete_workspace(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.DELETE_WORKSPACE)
    await container(request).bus.execute(cmds.DeleteWorkspace(workspace_id=ws))
    return web.Response(status=204)


# ---------------------------------------------------------------- API keys


async def create_api_key(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_API_KEYS)
    body = build(ApiKeyRequest, await read_json(request))
    cmd = cmds.CreateApiKey(
        workspace_id=ws,
        actor_id=await actor(request),
        actor_role=request[ROLE_KEY],
        name=body.name,
        role=body.role,
    )
    result = await container(request).bus.execute(cmd)
    return respond(
        result.fields | {"position": result.position},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def list_keys(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_API_KEYS)
    return await answer_read(request, list_api_keys, ws)


async def revoke_api_key(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.MANAGE_API_KEYS)
    key_id = parse_uuid(request.match_info["key_id"], "api key")
    await container(request).bus.execute(cmds.RevokeApiKey(workspace_id=ws, key_id=key_id))
    return web.Response(status=204)


ROUTES: list[Route] = [
    Route(
        "GET",
        f"{WS}/members",
        list_members,
        "The workspace's members",
        params=(MIN_POSITION,),
        tag="members",
    ),
    Route(
        "POST",
        f"{WS}/members",
        add_member,
        "Add a registered user as a member (owner role: owners only)",
        status=201,
        body=MemberRequest,
        tag="members",
        extra_responses={409: "already_member"},
    ),
    Route(
        "PATCH",
        f"{WS}/members/{{user_id}}",
        change_member_role,
        "Change a member's role (touching an owner: owners only; an owner must remain)",
        body=RoleRequest,
        tag="members",
        extra_responses={409: "last_owner: a workspace must keep an owner"},
    ),
    Route(
        "DELETE",
        f"{WS}/members/{{user_id}}",
        remove_member,
        "Remove a member (an owner must remain)",
        status=204,
        tag="members",
        extra_responses={409: "last_owner: a workspace must keep an owner"},
    ),
    Route(
        "DELETE",
        WS,
        delete_workspace,
        "Delete the workspace (owners only)",
        status=204,
        tag="workspaces",
    ),
    Route(
        "POST",
        f"{WS}/api-keys",
        create_api_key,
        "Create an API key with a role; the key is shown once, only its hash is kept",
        status=201,
        body=ApiKeyRequest,
        tag="api-keys",
    ),
    Route(
        "GET",
        f"{WS}/api-keys",
        list_keys,
        "The workspace's API keys (without keys)",
        params=(MIN_POSITION,),
        tag="api-keys",
    ),
    Route(
        "DELETE",
        f"{WS}/api-keys/{{key_id}}",
        revoke_api_key,
        "Revoke an API key",
        status=204,
        tag="api-keys",
    ),
]
