"""The Workspace aggregate: a tenant, its name, its members' roles, and whether it was deleted.

Member changes keep one invariant: a workspace always has an owner. Who may make which change is
`domain.roles` (the permission matrix), not this module. Pure domain code; imported by
`commands/` (which saves it) and by consumers that read its events.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate
from domain.roles import ROLES


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

    class WorkspaceDeleted(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: Workspace) -> None:
            aggregate.deleted = True

    def __init__(self, workspace_id: str, name: str, owner_id: str) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.members: dict[str, str] = {owner_id: "owner"}
        self.deleted = False

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
        """The member's role; None for strangers and for everyone once the workspace is deleted."""
        return None if self.deleted else self.members.get(user_id)

    def add_member(self, user_id: str, role: str, now: datetime) -> None:
        _check_role(role)
        if user_id in self.members:
            raise DomainError("this user is already a member", "already_member")
        self.record(self.MemberAdded, now, user_id=user_id, role=role)

    def change_role(self, user_id: str, role: str, now: datetime) -> None:
        _check_role(role)
        current = self._member(user_id)
        if current == role:
            return
        if current == "owner":
            self._keep_an_owner(user_id)
        self.record(self.MemberRoleChanged, now, user_id=user_id, role=role)

    def remove_member(self, user_id: str, now: datetime) -> None:
        if self._member(user_id) == "owner":
            self._keep_an_owner(user_id)
        self.record(self.MemberRemoved, now, user_id=user_id)

    def delete(self, now: datetime) -> None:
        if not self.deleted:
            self.record(self.WorkspaceDeleted, now)

    def _member(self, user_id: str) -> str:
        role = self.role_of(user_id)
        if role is None:
            raise DomainError("no such member", "not_found")
        return role

    def _keep_an_owner(self, leaving: str) -> None:
        if not any(role == "owner" for uid, role in self.members.items() if uid != leaving):
            raise DomainError("a workspace must keep an owner", "last_owner")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise DomainError(
            f"unknown role {role!r}; expected one of {', '.join(ROLES)}", "invalid_role"
        )
