"""Callback delivery commands: record one attempt to POST an execution's final result to its
callback URL. Model and handler together, like `commands.identity`; registered in
`commands.registry`, sent by `engine.callbacks`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from commands.context import CommandContext
from commands.handlers import Result, _load, now
from commands.models import Command
from domain.execution import Execution


class RecordCallbackAttempt(Command):
    """The outcome of delivery attempt `attempt` (1, 2, …): the answer's `status_code`, or the
    `error` when there was none; `next_attempt_at` None when no attempt follows. Idempotent by
    attempt number: a repeat records nothing and answers the execution's delivery state."""

    execution_id: UUID
    attempt: int = Field(ge=1)
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=1000)
    next_attempt_at: datetime | None = None


def record_callback_attempt(ctx: CommandContext, cmd: RecordCallbackAttempt) -> Result:
    execution = _load(ctx, Execution, cmd.execution_id, "execution")
    accepted = execution.record_callback_attempt(
        cmd.attempt, cmd.status_code, cmd.error, cmd.next_attempt_at, now()
    )
    position = ctx.save(execution) if accepted else 0
    return Result(
        position,
        {
            "accepted": accepted,
            "callback_status": execution.callback_status,
            "attempts": execution.callback_attempts,
            "next_attempt_at": execution.callback_next_attempt_at,
        },
    )


HANDLERS: dict[type[Command], Callable[[CommandContext, Any], Result]] = {
    RecordCallbackAttempt: record_callback_attempt,
}
