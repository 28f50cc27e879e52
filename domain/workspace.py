"""The Workspace aggregate: a tenant, its name and its members' roles.

Pure domain code; imported by `commands/` (which saves it) and by consumers that read its events.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import TenantAggregate


class Workspace(TenantAggregate):
    class WorkspaceCreated(Aggregate.Created):
        workspace_id: str
        name: str
        owner_id: str

    def __init__(self, workspace_id: str, name: str, owner_id: str) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.members: dict[str, str] = {owner_id: "owner"}

    @classmethod
    def create(cls, id: UUID, name: str, owner_id: str, now: datetime) -> Workspace:
        return cls._create(
            cls.WorkspaceCreated,
            id=id,
            workspace_id=str(id),
            name=name,
            owner_id=owner_id,
            timestamp=now,
        )

    def role_of(self, user_id: str) -> str | None:
        return self.members.get(user_id)
