"""The WorkspaceVariables aggregate: a workspace's variables (`{name: JSON value}`), which node
configs read as `{{ vars.<name> }}`. Not secret (credentials are). One aggregate per workspace,
its id derived from the workspace, kept apart from the Workspace aggregate that every request
loads. An execution records the variables it started with (`ExecutionStarted.vars`).

Pure domain code; imported by `commands/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate

_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/variables")
# A JMESPath identifier, so that `{{ vars.<name> }}` reads it without quoting.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"


class WorkspaceVariables(TenantAggregate):
    class VariablesCreated(Aggregate.Created):
        workspace_id: str

    class VariableSet(Aggregate.Event):
        workspace_id: str
        name: str
        value: Any

        def apply(self, aggregate: WorkspaceVariables) -> None:
            aggregate.values[self.name] = self.value

    class VariableDeleted(Aggregate.Event):
        workspace_id: str
        name: str

        def apply(self, aggregate: WorkspaceVariables) -> None:
            aggregate.values.pop(self.name, None)

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.values: dict[str, Any] = {}

    @staticmethod
    def id_for(workspace_id: str) -> UUID:
        return uuid5(_NAMESPACE, workspace_id)

    @classmethod
    def create(cls, workspace_id: str, now: datetime) -> WorkspaceVariables:
        return cls._create(
            cls.VariablesCreated,
            id=cls.id_for(workspace_id),
            workspace_id=workspace_id,
            timestamp=now,
        )

    def set(self, name: str, value: Any, now: datetime) -> None:
        """Set a variable (a repeat of the current value records nothing)."""
        if name in self.values and self.values[name] == value:
            return
        self.record(self.VariableSet, now, name=name, value=value)

    def delete(self, name: str, now: datetime) -> None:
        if name not in self.values:
            raise DomainError(f"variable {name!r} not found", "not_found")
        self.record(self.VariableDeleted, now, name=name)
