"""Shared base of LinkFlow's aggregates: tenancy on every event, and the domain's error type.

Pure (no I/O, no clock): times and ids come in as arguments. Imported by the rest of `domain/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

# The aggregates whose events belong to no workspace's log, by module (as stored topics name
# them): users, the e-mail index and refresh-token families. Their events' `workspace_id` is a
# user's personal workspace, not the workspace the event is about; the workspace event log
# leaves them out (`linkflow_events.workspace_id` NULL) and the hash chain puts them in the
# instance chain (domain.audit_chain).
OUTSIDE_WORKSPACE_LOGS = frozenset({"domain.user", "domain.token_family"})


class DomainError(Exception):
    """A command the aggregate refuses (the caller maps it to 409/422)."""

    code = "conflict"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class TenantAggregate(Aggregate):
    """An aggregate that belongs to one workspace; every event it records carries that workspace."""

    workspace_id: str

    def record(self, event_class: type[Aggregate.Event], now: datetime, **fields: Any) -> None:
        """Record one event, stamped with the workspace and the caller's clock."""
        self.trigger_event(event_class, workspace_id=self.workspace_id, timestamp=now, **fields)
