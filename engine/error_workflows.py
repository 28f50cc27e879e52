"""Error workflows: when an execution fails or times out and its definition names
`settings.error_workflow_id`, start that workflow once, with trigger `error_workflow` and input
`{execution: {id, workflow_id, error, failed_node}, workflow: {id, name}}`.

The `error_workflows` consumer (consumer group / position `error_workflows`, run by the
callbacks role) reads the close events from the relayed log, catching up from the event store
after a Redis flush like every `EventConsumer`. The start's Idempotency-Key is derived from the
failed execution's id, so a close delivered twice (or the consumer replayed from position 0)
answers the first start and starts nothing more. An error workflow's own failure starts nothing
(its trigger is `error_workflow`). A start that cannot be made (the error workflow archived,
missing, or of another workspace since the definition was saved) is logged and counted in
`linkflow_error_workflows_refused_total`, never retried. Imported by `gateways.roles`.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from prometheus_client import Counter

from commands.bus import CommandBus
from commands.handlers import ExecutionAnswer, NotFound
from commands.models import StartExecution
from domain.base import DomainError
from domain.execution import Execution
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.eventstore import EventStore
from infra.logging import get_logger, log_event
from infra.origin import SYSTEM

log = get_logger(__name__)

TRIGGER: Final = "error_workflow"
# The closes that start the error workflow: a failure and an execution timeout (not a cancel,
# which someone asked for).
FAILURES = (Execution.ExecutionFailed, Execution.ExecutionTimedOut)
STARTED = Counter(
    "linkflow_error_workflows_started_total", "Error workflows started for failed executions"
)
REFUSED = Counter(
    "linkflow_error_workflows_refused_total",
    "Error workflows that could not be started (archived, missing, another workspace)",
    ["reason"],
)


def idempotency_key(execution_id: UUID) -> str:
    """The key of the error workflow's start for this failed execution (one start each)."""
    return f"error-workflow:{execution_id}"


def error_workflow_start(store: EventStore, execution_id: UUID) -> StartExecution | None:
    """The start of the error workflow of this closed execution, or None when it has none (or
    is itself an error workflow's execution). A lookup: run it through `CommandBus.run`."""
    try:
        execution = store.read_fresh(Execution, execution_id)
    except AggregateNotFoundError:
        return None
    target = (execution.definition.get("settings") or {}).get("error_workflow_id")
    if target is None or execution.trigger == TRIGGER:
        return None
    error = execution.error or {}
    return StartExecution(
        workspace_id=UUID(execution.workspace_id),
        workflow_id=UUID(target),
        input={
            "execution": {
                "id": str(execution.id),
                "workflow_id": execution.workflow_id,
                "error": error,
                "failed_node": error.get("node_id"),
            },
            "workflow": {"id": execution.workflow_id, "name": execution.definition.get("name")},
        },
        trigger=TRIGGER,
        idempotency_key=idempotency_key(execution.id),
    )


class ErrorWorkflows(EventConsumer):
    name = "error_workflows"
    linger_ms = 100
    handles = FAILURES

    def __init__(self, bus: CommandBus, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus = bus

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        """Start each failed execution's error workflow before the position moves past its
        failure (a crash in between starts it again: the same key answers the first start)."""
        for logged, _ in events:
            cmd = await self.bus.run(error_workflow_start, logged.originator_id)
            if cmd is not None:
                await self._start(logged.originator_id, cmd)

    async def _start(self, failed: UUID, cmd: StartExecution) -> None:
        try:
            result = await self.bus.execute(cmd, origin=SYSTEM)
        except (NotFound, DomainError) as exc:
            REFUSED.labels("not_found" if isinstance(exc, NotFound) else exc.code).inc()
            log_event(
                log,
                "error workflow not started",
                logging.WARNING,
                execution_id=str(failed),
                error_workflow_id=str(cmd.workflow_id),
                reason=str(exc),
            )
            return
        if isinstance(result, ExecutionAnswer) and not result.repeated:
            STARTED.inc()
