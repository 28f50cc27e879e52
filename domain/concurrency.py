"""Concurrency limits of a workflow (`settings.concurrency`): the `ConcurrencyGate` aggregate,
one per (workflow, rendered key), which decides which executions hold a slot and which wait,
in order, for one.

The gate's decisions are its events (`SlotTaken`, `ExecutionWaiting`, `SlotFreed`,
`WaitAbandoned`): two processes that see the same slot free both try to append the next event
at the same version, the event store refuses one, and the loser decides again on what the
winner recorded. After a restart or a Redis flush the gate is rebuilt from its events.

Pure (no I/O, no clock: times come in as arguments). Imported by `domain.definition` (the
settings model), `commands.concurrency` (which saves gates beside executions) and tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate
from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.base import TenantAggregate
from domain.expressions import ExpressionError, ExpressionLimits, expression_errors, render

__all__ = [
    "MAX_KEY_CHARS",
    "ConcurrencyGate",
    "ConcurrencySettings",
    "ConcurrencyKeyError",
    "gate_id",
    "render_key",
]

_GATE_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/concurrency-gate")
MAX_KEY_CHARS = 200  # a rendered key longer than this is refused (it names a gate)


class ConcurrencySettings(BaseModel):
    """`settings.concurrency`: at most `limit` executions of the workflow run at once — per
    value of `key` (a `{{ expression }}` over the start's `trigger` and `vars`) when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, le=10_000)
    key: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("key")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "{{" not in value:
            raise ValueError("must be an expression such as '{{ trigger.customer_id }}'")
        for _, message in expression_errors(value):
            raise ValueError(message)
        return value


class ConcurrencyKeyError(ValueError):
    """The concurrency key did not render to a usable value (the execution fails at start)."""


def render_key(
    settings: ConcurrencySettings, context: dict[str, Any], limits: ExpressionLimits
) -> str:
    """The gate's key for one start: "" without `key`, else the rendered value as text
    (ConcurrencyKeyError when it fails, is null or empty, or is longer than MAX_KEY_CHARS)."""
    if settings.key is None:
        return ""
    try:
        value = render(settings.key, context, limits)
    except ExpressionError as exc:
        raise ConcurrencyKeyError(f"settings.concurrency.key: {exc}") from None
    if value is None or value == "":
        raise ConcurrencyKeyError("settings.concurrency.key rendered to nothing (null or empty)")
    if isinstance(value, (dict, list)):
        raise ConcurrencyKeyError("settings.concurrency.key must render to a string or a number")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_KEY_CHARS:
        raise ConcurrencyKeyError(
            f"settings.concurrency.key rendered to more than {MAX_KEY_CHARS} chars"
        )
    return text


def gate_id(workflow_id: str, key: str) -> UUID:
    """The gate of a workflow's executions with this key (the same for every process)."""
    return uuid5(_GATE_NAMESPACE, f"{workflow_id}\x00{key}")


class ConcurrencyGate(TenantAggregate):
    """Which executions of one (workflow, key) hold a slot (`holders`, in admission order) and
    which wait for one (`waiting`, first come first served)."""

    class Opened(Aggregate.Created):
        workspace_id: str
        workflow_id: str
        key: str

    class SlotTaken(Aggregate.Event):
        workspace_id: str
        execution_id: str

        def apply(self, aggregate: ConcurrencyGate) -> None:
            if self.execution_id in aggregate.waiting:
                aggregate.waiting.remove(self.execution_id)
            aggregate.holders.append(self.execution_id)

    class ExecutionWaiting(Aggregate.Event):
        workspace_id: str
        execution_id: str

        def apply(self, aggregate: ConcurrencyGate) -> None:
            aggregate.waiting.append(self.execution_id)

    class SlotFreed(Aggregate.Event):
        workspace_id: str
        execution_id: str

        def apply(self, aggregate: ConcurrencyGate) -> None:
            aggregate.holders.remove(self.execution_id)

    class WaitAbandoned(Aggregate.Event):
        """A waiting execution closed (canceled, timed out) before it got a slot."""

        workspace_id: str
        execution_id: str

        def apply(self, aggregate: ConcurrencyGate) -> None:
            aggregate.waiting.remove(self.execution_id)

    def __init__(self, workspace_id: str, workflow_id: str, key: str) -> None:
        self.workspace_id = workspace_id
        self.workflow_id = workflow_id
        self.key = key
        self.holders: list[str] = []
        self.waiting: list[str] = []

    @classmethod
    def open(cls, workspace_id: str, workflow_id: str, key: str, now: datetime) -> ConcurrencyGate:
        return cls._create(
            cls.Opened,
            id=gate_id(workflow_id, key),
            workspace_id=workspace_id,
            workflow_id=workflow_id,
            key=key,
            timestamp=now,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> ConcurrencyGate:
        clone = object.__new__(type(self))
        pending = self.pending_events
        clone.__dict__.update(
            {name: list(value) if value is pending else value for name, value in vars(self).items()}
        )
        clone.holders = list(self.holders)
        clone.waiting = list(self.waiting)
        memo[id(self)] = clone
        return clone

    def enter(self, execution_id: str, limit: int, now: datetime) -> bool:
        """A new execution: it takes a slot (True) when fewer than `limit` are held and nobody
        waits, else it waits (False). A repeat answers as before and records nothing."""
        if execution_id in self.holders:
            return True
        if execution_id in self.waiting:
            return False
        if len(self.holders) < limit and not self.waiting:
            self.record(self.SlotTaken, now, execution_id=execution_id)
            return True
        self.record(self.ExecutionWaiting, now, execution_id=execution_id)
        return False

    def leave(self, execution_id: str, now: datetime) -> bool:
        """A closed execution frees its slot, or leaves the line; False (nothing recorded) when
        it is in neither (a repeat)."""
        if execution_id in self.holders:
            self.record(self.SlotFreed, now, execution_id=execution_id)
            return True
        if execution_id in self.waiting:
            self.record(self.WaitAbandoned, now, execution_id=execution_id)
            return True
        return False

    def admit_next(self, limit: int, now: datetime) -> str | None:
        """The oldest waiting execution takes a free slot: its id, or None when no slot is free
        or nobody waits."""
        if len(self.holders) >= limit or not self.waiting:
            return None
        execution_id = self.waiting[0]
        self.record(self.SlotTaken, now, execution_id=execution_id)
        return execution_id
