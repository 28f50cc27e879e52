"""The task message that matching sends to workers on `tasks:<queue>` (one JSON field `task`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class TaskMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    execution_id: UUID
    workspace_id: str
    node_id: str
    attempt: int
    queue: str
    type: str
    config: dict[str, Any]
    timeout_s: float | None = None  # start-to-close: the worker bounds the attempt's run
    schedule_to_start_s: float | None = None  # set: the worker records the start (StartNode)
    # Paths (keys and indexes) of the secret markers in `config` the worker fills in.
    secrets: list[list[str | int]] = []
    # 1 first, 5 last (the execution's priority): the order matching feeds held tasks in.
    priority: int = 3
    republished: bool = False
    # A version of the execution at which this attempt was current: if the execution has no
    # later event, the attempt still awaits its result (the worker's cheap check before it
    # runs anything). 0: unknown.
    fence: int = 0


def task_id(execution_id: Any, node_id: str, attempt: int) -> str:
    return f"{execution_id}:{node_id}:{attempt}"


def task_for(event: Any, fence: int = 0) -> TaskMessage:
    """The task for one NodeScheduled event that carries one; `fence` defaults to the event's
    own version."""
    return TaskMessage(
        task_id=task_id(event.originator_id, event.node_id, event.attempt),
        execution_id=event.originator_id,
        workspace_id=event.workspace_id,
        node_id=event.node_id,
        attempt=event.attempt,
        queue=event.queue,
        fence=fence or event.originator_version,
        **event.task,
    )
