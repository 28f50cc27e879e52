"""The User aggregate (credentials, workspaces joined) and EmailIndex, which keeps e-mails unique.

EmailIndex has a deterministic id derived from the e-mail, so a second registration with the same
address collides in the event store (the eventsourcing idiom for uniqueness). Pure domain code.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import TenantAggregate

_EMAIL_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/email")


def normalise_email(email: str) -> str:
    return email.strip().lower()


class EmailIndex(TenantAggregate):
    """Maps one e-mail address to its user; created once per address."""

    class EmailClaimed(Aggregate.Created):
        workspace_id: str
        user_id: str

    def __init__(self, workspace_id: str, user_id: str) -> None:
        self.workspace_id = workspace_id
        self.user_id = user_id

    @staticmethod
    def id_for(email: str) -> UUID:
        return uuid5(_EMAIL_NAMESPACE, normalise_email(email))

    @classmethod
    def create(cls, email: str, user_id: UUID, workspace_id: str, now: datetime) -> EmailIndex:
        return cls._create(
            cls.EmailClaimed,
            id=cls.id_for(email),
            workspace_id=workspace_id,
            user_id=str(user_id),
            timestamp=now,
        )


class User(TenantAggregate):
    """A person. `workspace_id` is the personal workspace made at registration."""

    class UserRegistered(Aggregate.Created):
        workspace_id: str
        email: str
        name: str
        password_hash: str

    class WorkspaceJoined(Aggregate.Event):
        workspace_id: str
        joined_workspace_id: str

        def apply(self, aggregate: User) -> None:
            if self.joined_workspace_id not in aggregate.workspaces:
                aggregate.workspaces.append(self.joined_workspace_id)

    class WorkspaceLeft(Aggregate.Event):
        workspace_id: str
        left_workspace_id: str

        def apply(self, aggregate: User) -> None:
            if self.left_workspace_id in aggregate.workspaces:
                aggregate.workspaces.remove(self.left_workspace_id)

    def __init__(self, workspace_id: str, email: str, name: str, password_hash: str) -> None:
        self.workspace_id = workspace_id
        self.email = email
        self.name = name
        self.password_hash = password_hash
        self.workspaces: list[str] = [workspace_id]

    @classmethod
    def register(
        cls,
        id: UUID,
        email: str,
        name: str,
        password_hash: str,
        personal_workspace_id: str,
        now: datetime,
    ) -> User:
        return cls._create(
            cls.UserRegistered,
            id=id,
            workspace_id=personal_workspace_id,
            email=normalise_email(email),
            name=name,
            password_hash=password_hash,
            timestamp=now,
        )

    def join(self, workspace_id: str, now: datetime) -> None:
        if workspace_id not in self.workspaces:
            self.record(self.WorkspaceJoined, now, joined_workspace_id=workspace_id)

    def leave(self, workspace_id: str, now: datetime) -> None:
        if workspace_id in self.workspaces:
            self.record(self.WorkspaceLeft, now, left_workspace_id=workspace_id)
