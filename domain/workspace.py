"""The Workspace aggregate: a tenant, its name and its members' roles.

Pure domain code; imported by `commands/` (which saves it) and by consumers that read its events.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate

ROLES = ("owner", "admin", "member", "viewer")


class Workspace(TenantAggregate):
    class WorkspaceCreated(Aggregate.Created):
        workspace_id: str
        name: str
        owner_id: str

    class MemberAdded(Aggregate.Event):
        workspace_id: str
        user_id: str
        role: str

        def apply(self, aggregate: Workspace) -> None:
            aggregate.members[self.user_id] = self.role

    class MemberRoleChanged(Aggregate.Event):
        workspace_id: str
        user_id: str
        role: str

        def apply(self, aggregate: Workspace) -> None:
            aggregate.members[self.user_id] = self.role

    class MemberRemoved(Aggregate.Event):
        workspace_id: str
        user_id: str

        def apply(self, aggregate: Workspace) -> None:
            aggregate.members.pop(self.user_id, None)

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

    def add_member(self, user_id: str, role: str, now: datetime) -> None:
        _check_role(role)
        if user_id in self.members:
            raise DomainError("already a member of this workspace", "already_member")
        self.record(self.MemberAdded, now, user_id=user_id, role=role)

    def change_role(self, user_id: str, role: str, now: datetime) -> None:
        _check_role(role)
        current = self.members.get(user_id)
        if current is None:
            raise DomainError("not a member of this workspace", "not_found")
        if current == role:
            return
        if current == "owner" and self._owners() == 1:
            raise DomainError("a workspace must keep an owner", "last_owner")
        self.record(self.MemberRoleChanged, now, user_id=user_id, role=role)

    def remove_member(self, user_id: str, now: datetime) -> None:
        current = self.members.get(user_id)
        if current is None:
            raise DomainError("not a member of this workspace", "not_found")
        if current == "owner" and self._owners() == 1:
            raise DomainError("a workspace must keep an owner", "last_owner")
        self.record(self.MemberRemoved, now, user_id=user_id)

    def _owners(self) -> int:
        return sum(1 for role in self.members.values() if role == "owner")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise DomainError(f"role must be one of {', '.join(ROLES)}", "invalid_role")
