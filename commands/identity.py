"""Identity and access commands: login sessions (refresh-token families), workspace members,
workspace deletion and API keys. Models and handlers together, like `commands.handlers`;
registered in `commands.registry`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from pydantic import Field

from commands.context import CommandContext
from commands.handlers import NotFound, Result, _load, _owned, now
from commands.models import Command
from domain.api_key import ApiKey
from domain.roles import may_change_member
from domain.token_family import TokenFamily
from domain.user import EmailIndex, User
from domain.workspace import Workspace
from infra.passwords import digest

API_KEY_PREFIX = "lfk_"
REFRESH_PREFIX = "lfr_"
Role = str

# ---------------------------------------------------------------- sessions


class StartSession(Command):
    """After a successful login: a new refresh-token family for the user."""

    user_id: UUID
    ttl_s: int = Field(gt=0)


class RefreshSession(Command):
    refresh_token: str = Field(min_length=1, max_length=512)
    ttl_s: int = Field(gt=0)


class EndSession(Command):
    refresh_token: str = Field(min_length=1, max_length=512)


class RefreshRefused(Exception):
    """The refresh token is unknown, expired, rotated away or revoked (answered 401)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(f"refresh token {outcome}")
        self.outcome = outcome


def _refresh_token(family_id: UUID) -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return f"{REFRESH_PREFIX}{family_id.hex}.{secret}", digest(secret)


def _parse_refresh_token(token: str) -> tuple[UUID, str] | None:
    if not token.startswith(REFRESH_PREFIX):
        return None
    family, _, secret = token[len(REFRESH_PREFIX) :].partition(".")
    try:
        return UUID(hex=family), digest(secret)
    except ValueError:
        return None


def start_session(ctx: CommandContext, cmd: StartSession) -> Result:
    user = _load(ctx, User, cmd.user_id, "user")
    family_id = uuid4()
    token, token_hash = _refresh_token(family_id)
    at = now()
    family = TokenFamily.start(
        family_id,
        user.workspace_id,
        str(user.id),
        token_hash,
        at + timedelta(seconds=cmd.ttl_s),
        at,
    )
    return Result(ctx.save(family), {"refresh_token": token, "user_id": str(user.id)})


def _family(ctx: CommandContext, token: str) -> tuple[TokenFamily, str]:
    parsed = _parse_refresh_token(token)
    if parsed is None:
        raise RefreshRefused("unknown")
    try:
        return ctx.load(TokenFamily, parsed[0]), parsed[1]
    except AggregateNotFoundError:
        raise RefreshRefused("unknown") from None


def refresh_session(ctx: CommandContext, cmd: RefreshSession) -> Result:
    family, presented = _family(ctx, cmd.refresh_token)
    token, token_hash = _refresh_token(family.id)
    at = now()
    outcome = family.rotate(presented, token_hash, at + timedelta(seconds=cmd.ttl_s), at)
    position = ctx.save(family) if family.pending_events else 0
    if outcome != "rotated":
        raise RefreshRefused(outcome)
    return Result(position, {"refresh_token": token, "user_id": family.user_id})


def end_session(ctx: CommandContext, cmd: EndSession) -> Result:
    family, presented = _family(ctx, cmd.refresh_token)
    if presented != family.token_hash and presented not in family.used_hashes:
        raise RefreshRefused("unknown")
    family.revoke("logout", now())
    return Result(ctx.save(family) if family.pending_events else 0)


# ---------------------------------------------------------------- members


class AddMember(Command):
    workspace_id: UUID
    actor_role: Role
    email: str = Field(min_length=3, max_length=320)
    role: Role


class ChangeMemberRole(Command):
    workspace_id: UUID
    actor_role: Role
    user_id: UUID
    role: Role


class RemoveMember(Command):
    workspace_id: UUID
    actor_role: Role
    user_id: UUID


class DeleteWorkspace(Command):
    workspace_id: UUID


def _workspace(ctx: CommandContext, workspace_id: UUID) -> Workspace:
    workspace = _load(ctx, Workspace, workspace_id, "workspace")
    if workspace.deleted:
        raise NotFound("workspace")
    return workspace


def _may(actor_role: str, current: str | None, new: str | None) -> None:
    if not may_change_member(actor_role, current, new):
        raise Forbidden(f"the role {actor_role!r} may not give, change or remove an owner's role")


class Forbidden(Exception):
    """The actor's role does not permit this change (answered 403)."""


def _member_fields(user: User, role: str) -> dict[str, Any]:
    return {"user_id": str(user.id), "email": user.email, "name": user.name, "role": role}


def add_member(ctx: CommandContext, cmd: AddMember) -> Result:
    workspace = _workspace(ctx, cmd.workspace_id)
    try:
        index = ctx.load(EmailIndex, EmailIndex.id_for(cmd.email))
    except AggregateNotFoundError:
        raise NotFound("user") from None
    user = _load(ctx, User, UUID(index.user_id), "user")
    _may(cmd.actor_role, workspace.role_of(str(user.id)), cmd.role)
    at = now()
    workspace.add_member(str(user.id), cmd.role, at)
    user.join(str(workspace.id), at)
    return Result(ctx.save(workspace, user), _member_fields(user, cmd.role))


def change_member_role(ctx: CommandContext, cmd: ChangeMemberRole) -> Result:
    workspace = _workspace(ctx, cmd.workspace_id)
    _may(cmd.actor_role, workspace.role_of(str(cmd.user_id)), cmd.role)
    workspace.change_role(str(cmd.user_id), cmd.role, now())
    user = _load(ctx, User, cmd.user_id, "user")
    position = ctx.save(workspace) if workspace.pending_events else 0
    return Result(position, _member_fields(user, cmd.role))


def remove_member(ctx: CommandContext, cmd: RemoveMember) -> Result:
    workspace = _workspace(ctx, cmd.workspace_id)
    current = workspace.role_of(str(cmd.user_id))
    if current is None:
        raise NotFound("member")
    _may(cmd.actor_role, current, None)
    at = now()
    workspace.remove_member(str(cmd.user_id), at)
    user = _load(ctx, User, cmd.user_id, "user")
    user.leave(str(workspace.id), at)
    return Result(ctx.save(workspace, user))


def delete_workspace(ctx: CommandContext, cmd: DeleteWorkspace) -> Result:
    workspace = _workspace(ctx, cmd.workspace_id)
    workspace.delete(now())
    return Result(ctx.save(workspace))


# ---------------------------------------------------------------- API keys


class CreateApiKey(Command):
    workspace_id: UUID
    actor_id: UUID
    actor_role: Role
    name: str = Field(min_length=1, max_length=200)
    role: Role


class RevokeApiKey(Command):
    workspace_id: UUID
    key_id: UUID


class RecordApiKeyUse(Command):
    key_id: UUID


def create_api_key(ctx: CommandContext, cmd: CreateApiKey) -> Result:
    _workspace(ctx, cmd.workspace_id)
    # A key may not hold more than its creator: only owners mint owner keys.
    _may(cmd.actor_role, None, cmd.role)
    key_id = uuid4()
    secret = secrets.token_urlsafe(32)
    key = ApiKey.create(
        key_id, str(cmd.workspace_id), cmd.name, cmd.role, digest(secret), str(cmd.actor_id), now()
    )
    fields = {
        "id": str(key_id),
        "name": key.name,
        "role": key.role,
        "key": f"{API_KEY_PREFIX}{key_id.hex}_{secret}",
        "created_at": key.created_on,
    }
    return Result(ctx.save(key), fields)


def revoke_api_key(ctx: CommandContext, cmd: RevokeApiKey) -> Result:
    key = _owned(ctx, ApiKey, cmd.key_id, cmd.workspace_id, "api key")
    if key.revoked:
        raise NotFound("api key")
    key.revoke(now())
    return Result(ctx.save(key))


def record_api_key_use(ctx: CommandContext, cmd: RecordApiKeyUse) -> Result:
    key = _load(ctx, ApiKey, cmd.key_id, "api key")
    key.use(now())
    return Result(ctx.save(key) if key.pending_events else 0)


def parse_api_key(token: str) -> tuple[UUID, str] | None:
    """The key id and the digest of its secret, or None if `token` is not shaped like a key."""
    body = token[len(API_KEY_PREFIX) :]
    if not token.startswith(API_KEY_PREFIX) or len(body) < 34 or body[32] != "_":
        return None
    try:
        return UUID(hex=body[:32]), digest(body[33:])
    except ValueError:
        return None


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    StartSession: start_session,
    RefreshSession: refresh_session,
    EndSession: end_session,
    AddMember: add_member,
    ChangeMemberRole: change_member_role,
    RemoveMember: remove_member,
    DeleteWorkspace: delete_workspace,
    CreateApiKey: create_api_key,
    RevokeApiKey: revoke_api_key,
    RecordApiKeyUse: record_api_key_use,
}
