"""WebhookIndex, which maps a workflow's webhook token to its workspace and workflow, and the
shape in which a workflow's hook is shown.

The index has a deterministic id derived from the token (the `EmailIndex` idiom), so the gateway
resolves a token from the event store itself: consistent, with no projection lag, and a second
claim of a token collides. Pure domain code; the token comes in as an argument.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.base import TenantAggregate

_TOKEN_NAMESPACE = uuid5(NAMESPACE_URL, "https://linkflow.dev/webhook-token")
HOOK_PATH = "/api/v1/hooks/{token}"


def hook_of(token: str | None, trigger_type: str | None) -> dict[str, Any] | None:
    """`{token, path}` of a workflow whose trigger is a webhook; None otherwise."""
    if not token or trigger_type != "webhook":
        return None
    return {"token": token, "path": HOOK_PATH.format(token=token)}


class WebhookIndex(TenantAggregate):
    """Maps one webhook token to its workflow; created once per token, with the workflow."""

    class WebhookTokenIssued(Aggregate.Created):
        workspace_id: str
        workflow_id: str

    def __init__(self, workspace_id: str, workflow_id: str) -> None:
        self.workspace_id = workspace_id
        self.workflow_id = workflow_id

    @staticmethod
    def id_for(token: str) -> UUID:
        return uuid5(_TOKEN_NAMESPACE, token)

    @classmethod
    def create(
        cls, token: str, workflow_id: UUID, workspace_id: str, now: datetime
    ) -> WebhookIndex:
        return cls._create(
            cls.WebhookTokenIssued,
            id=cls.id_for(token),
            workspace_id=workspace_id,
            workflow_id=str(workflow_id),
            timestamp=now,
        )
