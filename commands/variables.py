"""Workspace variable commands: set one, delete one. Models and handlers together, like
`commands.identity`; registered in `commands.registry`. (Reading them:
`commands.handlers.workspace_variables`.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from pydantic import Field

from commands.context import CommandContext
from commands.handlers import Result, now
from commands.models import Command
from domain.base import DomainError
from domain.json_limits import json_size
from domain.variables import NAME_PATTERN, WorkspaceVariables


class SetVariable(Command):
    workspace_id: UUID
    name: str = Field(pattern=NAME_PATTERN)
    value: Any


class VariablesTooLarge(DomainError):
    """Setting the variable would make the workspace's variables, together, larger than
    `max_variables_bytes` as compact JSON."""

    code = "too_large"


class DeleteVariable(Command):
    workspace_id: UUID
    name: str


def _variables(ctx: CommandContext, workspace_id: UUID) -> WorkspaceVariables | None:
    try:
        return ctx.load(WorkspaceVariables, WorkspaceVariables.id_for(str(workspace_id)))
    except AggregateNotFoundError:
        return None


def set_variable(ctx: CommandContext, cmd: SetVariable) -> Result:
    at = now()
    variables = _variables(ctx, cmd.workspace_id) or WorkspaceVariables.create(
        str(cmd.workspace_id), at
    )
    limit = ctx.limits.max_variables_bytes
    if json_size({**variables.values, cmd.name: cmd.value}, limit) > limit:
        raise VariablesTooLarge(
            f"the workspace's variables together would be larger than {limit} bytes as JSON"
        )
    variables.set(cmd.name, cmd.value, at)
    position = ctx.save(variables) if variables.pending_events else 0
    return Result(position, {"name": cmd.name, "value": cmd.value})


def delete_variable(ctx: CommandContext, cmd: DeleteVariable) -> Result:
    variables = _variables(ctx, cmd.workspace_id)
    if variables is None or cmd.name not in variables.values:
        raise DomainError(f"variable {cmd.name!r} not found", "not_found")
    variables.delete(cmd.name, now())
    return Result(ctx.save(variables))


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    SetVariable: set_variable,
    DeleteVariable: delete_variable,
}
