"""The ApiKey aggregate: a machine credential bound to one workspace and one role. Only a hash
of its secret is recorded; the key itself is shown once, by the command that creates it.

Pure domain code; imported by `commands/`.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate
from domain.roles import ROLES


class ApiKey(TenantAggregate):
    class ApiKeyCreated(Aggregate.Created):
        workspace_id: str
        name: str
        role: str
        secret_hash: str
        created_by: str

    class ApiKeyUsed(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.last_used_at = self.timestamp

    class ApiKeyRevoked(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.revoked = True

    def __init__(
        self, workspace_id: str, name: str, role: str, secret_hash: str, created_by: str
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.role = role
        self.secret_hash = secret_hash
        self.created_by = created_by
        self.revoked = False
        self.last_used_at: datetime | None = None

    @classmethod
    def create(
        cls,
        id: UUID,
        workspace_id: str,
        name: str,
        role: str,
        secret_hash: str,
        created_by: str,
        now: datetime,
    ) -> ApiKey:
        if role not in ROLES:
            raise DomainError(f"unknown role {role!r}", "invalid_role")
        return cls._create(
            cls.ApiKeyCreated,
            id=id,
            workspace_id=workspace_id,
            name=name,
            role=role,
            secret_hash=secret_hash,
            created_by=created_by,
            timestamp=now,
        )

    def use(self, now: datetime) -> None:
        if not self.revoked:
            self.record(self.ApiKeyUsed, now)

    def revoke(self, now: datetime) -> None:
        if not self.revoked:
            self.record(self.ApiKeyRevoked, now)
