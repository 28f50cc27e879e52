"""Commands that talk to a running execution: send it a signal, decide one of its approvals.

Their models and handlers (gathered by `commands.registry`); the decisions are the Execution
aggregate's (`receive_signal`, `decide_approval`). The actor recorded is the command's origin
(`infra.origin`), the same one the bus stores beside the events. Imported by
`commands.registry` and `gateways.http.routes_signals`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from commands.context import CommandContext
from commands.handlers import LOOP_NODES, Result, _owned, now
from commands.models import Command
from domain.execution import Execution
from domain.waits import MAX_COMMENT_LENGTH, SIGNAL_NAME_PATTERN
from infra.origin import SYSTEM_ACTOR


class SendSignal(Command):
    """`name` (from the path) with an optional `payload`; a repeated `idempotency_key` is a
    no-op answered with the execution's current position."""

    workspace_id: UUID
    execution_id: UUID
    name: str = Field(pattern=SIGNAL_NAME_PATTERN, max_length=128)
    payload: Any = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class DecideApproval(Command):
    """An approver's decision on the waiting approval node `node_id`; `role` is the caller's
    role in the workspace (filled by the gateway)."""

    workspace_id: UUID
    execution_id: UUID
    node_id: str = Field(max_length=64)
    role: str
    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_LENGTH)


def _execution(ctx: CommandContext, execution_id: UUID, workspace_id: UUID) -> Execution:
    execution: Execution = _owned(ctx, Execution, execution_id, workspace_id, "execution")
    if len(execution.nodes) > LOOP_NODES:
        ctx.leave_loop()
    execution.limits = ctx.limits
    return execution


def _answer(ctx: CommandContext, execution: Execution, accepted: bool) -> Result:
    """A repeat records nothing: its position is the execution's, so that a read with
    `min_position` sees what the first one did."""
    position = ctx.save(execution) if accepted else ctx.position_of(execution.id)
    return Result(position, {"accepted": accepted, "status": execution.status})


def send_signal(ctx: CommandContext, cmd: SendSignal) -> Result:
    execution = _execution(ctx, cmd.execution_id, cmd.workspace_id)
    actor = ctx.origin.actor or SYSTEM_ACTOR
    accepted = execution.receive_signal(
        cmd.name, cmd.payload, dict(actor), cmd.idempotency_key, now()
    )
    return _answer(ctx, execution, accepted)


def decide_approval(ctx: CommandContext, cmd: DecideApproval) -> Result:
    execution = _execution(ctx, cmd.execution_id, cmd.workspace_id)
    actor = ctx.origin.actor or SYSTEM_ACTOR
    accepted = execution.decide_approval(
        cmd.node_id, cmd.decision, cmd.comment, dict(actor), cmd.role, now()
    )
    return _answer(ctx, execution, accepted)


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    SendSignal: send_signal,
    DecideApproval: decide_approval,
}
