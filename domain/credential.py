"""The Credential aggregate: a named secret of a workspace (`{name, type, data}`), whose data is
held only sealed (encrypted by `infra.crypto` before it reaches the domain), never in plaintext.

Its id is derived from (workspace, name), so a name is unique within a workspace and a node
config's `{{ credentials.<name>.<field> }}` finds it without an index. Pure domain code.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import DomainError, TenantAggregate

_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/credential")
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"


class Credential(TenantAggregate):
    class CredentialCreated(Aggregate.Created):
        workspace_id: str
        name: str
        type: str
        sealed_data: str
        fields: list[str]

    class CredentialUpdated(Aggregate.Event):
        workspace_id: str
        type: str
        sealed_data: str
        fields: list[str]

        def apply(self, aggregate: Credential) -> None:
            aggregate.type = self.type
            aggregate.sealed_data = self.sealed_data
            aggregate.fields = list(self.fields)
            aggregate.deleted = False

    class CredentialDeleted(Aggregate.Event):
        workspace_id: str

        def apply(self, aggregate: Credential) -> None:
            aggregate.deleted = True

    def __init__(
        self, workspace_id: str, name: str, type: str, sealed_data: str, fields: list[str]
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.type = type
        self.sealed_data = sealed_data
        self.fields = list(fields)
        self.deleted = False

    @staticmethod
    def id_for(workspace_id: str, name: str) -> UUID:
        return uuid5(_NAMESPACE, f"{workspace_id}:{name}")

    @staticmethod
    def sealing_context(credential_id: UUID) -> str:
        """The associated data its sealed data is bound to (sealed elsewhere, it does not open)."""
        return f"credential:{credential_id}"

    @classmethod
    def create(
        cls,
        workspace_id: str,
        name: str,
        type: str,
        sealed_data: str,
        fields: list[str],
        now: datetime,
    ) -> Credential:
        return cls._create(
            cls.CredentialCreated,
            id=cls.id_for(workspace_id, name),
            workspace_id=workspace_id,
            name=name,
            type=type,
            sealed_data=sealed_data,
            fields=sorted(fields),
            timestamp=now,
        )

    def update(self, type: str, sealed_data: str, fields: list[str], now: datetime) -> None:
        """Replace the data (also brings a deleted credential of this name back)."""
        self.record(
            self.CredentialUpdated, now, type=type, sealed_data=sealed_data, fields=sorted(fields)
        )

    def delete(self, now: datetime) -> None:
        if self.deleted:
            raise DomainError("credential not found", "not_found")
        self.record(self.CredentialDeleted, now)
