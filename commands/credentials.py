"""Credential commands: create, replace the data of, and delete a workspace's credentials.
Models and handlers together, like `commands.identity`; registered in `commands.registry`.

Commands carry the data already sealed (the gateway seals it with `infra.crypto.SecretBox` under
`Credential.sealing_context(id)`) plus its field names: no plaintext reaches a command, an event
or the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from pydantic import Field

from commands.context import CommandContext
from commands.handlers import NotFound, Result, _owned, now
from commands.models import Command
from domain.base import DomainError
from domain.credential import NAME_PATTERN, Credential

TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"


class CreateCredential(Command):
    workspace_id: UUID
    name: str = Field(pattern=NAME_PATTERN)
    type: str = Field(pattern=TYPE_PATTERN)
    sealed_data: str = Field(min_length=1)
    fields: list[str]


class UpdateCredential(Command):
    workspace_id: UUID
    credential_id: UUID
    type: str | None = Field(default=None, pattern=TYPE_PATTERN)  # None: keep the type
    sealed_data: str = Field(min_length=1)
    fields: list[str]


class DeleteCredential(Command):
    workspace_id: UUID
    credential_id: UUID


def credential_fields(credential: Credential) -> dict[str, Any]:
    """What the API shows of a credential: never its data."""
    return {
        "id": str(credential.id),
        "name": credential.name,
        "type": credential.type,
        "fields": list(credential.fields),
        "created_at": credential.created_on,
        "updated_at": credential.modified_on,
    }


def create_credential(ctx: CommandContext, cmd: CreateCredential) -> Result:
    ws = str(cmd.workspace_id)
    credential_id = Credential.id_for(ws, cmd.name)
    at = now()
    try:
        credential = ctx.load(Credential, credential_id)
    except AggregateNotFoundError:
        credential = Credential.create(ws, cmd.name, cmd.type, cmd.sealed_data, cmd.fields, at)
    else:
        if not credential.deleted:
            raise DomainError(
                f"a credential named {cmd.name!r} already exists", "credential_exists"
            )
        credential.update(cmd.type, cmd.sealed_data, cmd.fields, at)  # a deleted name, reused
    return Result(ctx.save(credential), credential_fields(credential))


def _live(ctx: CommandContext, workspace_id: UUID, credential_id: UUID) -> Credential:
    credential: Credential = _owned(ctx, Credential, credential_id, workspace_id, "credential")
    if credential.deleted:
        raise NotFound("credential")
    return credential


def update_credential(ctx: CommandContext, cmd: UpdateCredential) -> Result:
    credential = _live(ctx, cmd.workspace_id, cmd.credential_id)
    credential.update(cmd.type or credential.type, cmd.sealed_data, cmd.fields, now())
    return Result(ctx.save(credential), credential_fields(credential))


def delete_credential(ctx: CommandContext, cmd: DeleteCredential) -> Result:
    credential = _live(ctx, cmd.workspace_id, cmd.credential_id)
    credential.delete(now())
    return Result(ctx.save(credential))


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    CreateCredential: create_credential,
    UpdateCredential: update_credential,
    DeleteCredential: delete_credential,
}
