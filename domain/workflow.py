"""The Workflow aggregate: a named workflow whose definitions are immutable, numbered versions.

Pure domain code; definitions arrive already validated (see domain.definition) as JSON objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate
from domain.json_limits import footprint


class Workflow(TenantAggregate):
    class WorkflowCreated(Aggregate.Created):
        workspace_id: str
        name: str
        definition: dict[str, Any]
        created_by: str
        webhook_token: str | None = None  # None in workflows created before webhooks

    class WorkflowVersionPublished(Aggregate.Event):
        workspace_id: str
        number: int
        name: str
        definition: dict[str, Any]

        def apply(self, aggregate: Workflow) -> None:
            aggregate.versions.append(self.definition)
            aggregate.name = self.name
            aggregate.footprint += footprint(self.definition)

    class WorkflowActivated(Aggregate.Event):
        workspace_id: str
        active_version: int

        def apply(self, aggregate: Workflow) -> None:
            aggregate.active_version = self.active_version

    class WorkflowDeactivated(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: Workflow) -> None:
            aggregate.active_version = None

    class WorkflowArchived(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: Workflow) -> None:
            aggregate.archived = True
            aggregate.active_version = None

    def __init__(
        self,
        workspace_id: str,
        name: str,
        definition: dict[str, Any],
        created_by: str,
        webhook_token: str | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.created_by = created_by
        self.webhook_token = webhook_token
        self.versions: list[dict[str, Any]] = [definition]
        self.active_version: int | None = None
        self.archived = False
        # About how many bytes its versions hold (the aggregate cache's byte budget).
        self.footprint = footprint(definition)

    @classmethod
    def create(
        cls,
        id: UUID,
        workspace_id: str,
        definition: dict[str, Any],
        created_by: str,
        now: datetime,
        webhook_token: str | None = None,
    ) -> Workflow:
        """A new workflow; `webhook_token` (made by the caller, unguessable) names its hook."""
        return cls._create(
            cls.WorkflowCreated,
            id=id,
            workspace_id=workspace_id,
            name=definition["name"],
            definition=definition,
            created_by=created_by,
            webhook_token=webhook_token,
            timestamp=now,
        )

    @property
    def latest_version(self) -> int:
        return len(self.versions)

    @property
    def active(self) -> bool:
        return self.active_version is not None

    def definition(self, version: int | None = None) -> dict[str, Any]:
        number = self.latest_version if version is None else version
        if not 1 <= number <= len(self.versions):
            raise DomainError(f"workflow has no version {number}", "unknown_version")
        return self.versions[number - 1]

    def triggered_version(self, trigger: str) -> int:
        """The version a webhook or schedule trigger starts: the active one, if its trigger is
        of that kind; refused otherwise (deactivating a workflow stops its triggers)."""
        version = self.active_version
        if (
            self.archived
            or version is None
            or self.definition(version).get("trigger", {}).get("type") != trigger
        ):
            raise DomainError(f"the workflow has no active {trigger} trigger", "trigger_inactive")
        return version

    def publish_version(self, definition: dict[str, Any], now: datetime) -> int:
        self._refuse_if_archived()
        number = self.latest_version + 1
        self.record(
            self.WorkflowVersionPublished,
            now,
            number=number,
            name=definition["name"],
            definition=definition,
        )
        return number

    def activate(self, version: int | None, now: datetime) -> None:
        self._refuse_if_archived()
        number = self.latest_version if version is None else version
        self.definition(number)
        if self.active_version != number:
            self.record(self.WorkflowActivated, now, active_version=number)

    def deactivate(self, now: datetime) -> None:
        if self.active_version is not None:
            self.record(self.WorkflowDeactivated, now)

    def archive(self, now: datetime) -> None:
        if not self.archived:
            self.record(self.WorkflowArchived, now)

    def _refuse_if_archived(self) -> None:
        if self.archived:
            raise DomainError("workflow is archived", "archived")
