"""Command models: imperatives, validated by pydantic before any handler runs.

Imported by `commands.handlers`, the gateways and the engine (which send commands).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.search_attributes import SearchAttributeError, check_attributes

HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*")


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterUser(Command):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=1024)
    name: str = Field(min_length=1, max_length=200)


class CreateWorkspace(Command):
    actor_id: UUID
    name: str = Field(min_length=1, max_length=200)


class CreateWorkflow(Command):
    workspace_id: UUID
    actor_id: UUID
    definition: dict[str, Any]


class UpdateWorkflow(Command):
    workspace_id: UUID
    workflow_id: UUID
    definition: dict[str, Any]


class ActivateWorkflow(Command):
    workspace_id: UUID
    workflow_id: UUID
    version: int | None = None


class DeactivateWorkflow(Command):
    workspace_id: UUID
    workflow_id: UUID


class ArchiveWorkflow(Command):
    workspace_id: UUID
    workflow_id: UUID


class StartExecution(Command):
    workspace_id: UUID
    workflow_id: UUID
    input: Any = None
    version: int | None = Field(default=None, ge=1)
    callback_url: str | None = Field(default=None, max_length=2048)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    # error_workflow: started by engine.error_workflows for a failed execution (latest version)
    trigger: Literal["manual", "webhook", "schedule", "error_workflow"] = "manual"
    search_attributes: dict[str, Any] | None = None
    # Overrides the definition's settings.priority (1 first, 5 last).
    priority: int | None = Field(default=None, ge=1, le=5)

    @field_validator("search_attributes")
    @classmethod
    def _search_attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return check_attributes(value)
        except SearchAttributeError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not HTTP_URL.fullmatch(value):
            raise ValueError("must be an absolute http or https URL")
        return value


class CancelExecution(Command):
    workspace_id: UUID
    execution_id: UUID
    reason: str = "canceled by request"


class StartNode(Command):
    """A worker is about to run an attempt whose node has a schedule-to-start timeout: it runs
    the attempt only if this is accepted."""

    execution_id: UUID
    node_id: str
    attempt: int


class TimeOutNode(Command):
    """A worker ran an attempt for its node's whole `timeout_s` (start-to-close)."""

    execution_id: UUID
    node_id: str
    attempt: int


class CompleteNode(Command):
    execution_id: UUID
    node_id: str
    attempt: int
    output: Any = None


class FailNode(Command):
    execution_id: UUID
    node_id: str
    attempt: int
    error: dict[str, Any]
    retryable: bool = True


class FireTimer(Command):
    execution_id: UUID
    timer_id: str
