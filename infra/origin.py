"""Who caused a command's events, and in which request: the `Origin` saved beside each event
(the metadata columns `actor` and `request_id` of `linkflow_events`, migrations 016–017), never
in the aggregate's state (the domain stays pure, and no event is ever rewritten).

Actors: `{"type": "user", "id"}` (a user's access token), `{"type": "api_key", "id"}`,
`{"type": "webhook", "workflow_id"}` (an inbound webhook start), `{"type": "schedule",
"workflow_id"}` (a schedule's start), and the engine (workers, timers, matching, callbacks): no
actor, stored as NULL and read as `{"type": "system"}` (`SYSTEM_ACTOR`).

How it travels (one path): the gateway's request-id middleware (`gateways.http.request_ids`)
and its authentication (`gateways.http.auth.principal`) set the request's origin with
`set_origin` (a context variable: each aiohttp request is its own task); `CommandBus.execute`
reads it once where a command enters (`current_origin`, on the event loop) unless the caller
names one (a webhook's or a schedule's start), and from there it is an explicit argument:
`CommandContext` → `GroupCommit` request → `EventStore._put` → the recorder's `insert_events`
→ `linkflow_append_events`. Code off the loop (the bus's threads) never reads the variable.

Imported by `infra.group_commit`, `infra.eventstore`, `infra.recorder`, `commands/`, the gateways
and the engine's schedules.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

SYSTEM_ACTOR: dict[str, str] = {"type": "system"}


@dataclass(frozen=True)
class Origin:
    """The actor (None: the system) and the request id (None: no request) of a command."""

    actor: dict[str, str] | None = None
    request_id: str | None = None

    @property
    def actor_json(self) -> str | None:
        """The actor as stored (JSON text; None for the system)."""
        return None if self.actor is None else json.dumps(self.actor, separators=(",", ":"))

    def with_actor(self, actor: dict[str, str] | None) -> Origin:
        return Origin(actor, self.request_id)


SYSTEM = Origin()


def user_actor(user_id: UUID) -> dict[str, str]:
    return {"type": "user", "id": str(user_id)}


def api_key_actor(key_id: UUID) -> dict[str, str]:
    return {"type": "api_key", "id": str(key_id)}


def webhook_actor(workflow_id: UUID | str) -> dict[str, str]:
    return {"type": "webhook", "workflow_id": str(workflow_id)}


def schedule_actor(workflow_id: UUID | str) -> dict[str, str]:
    return {"type": "schedule", "workflow_id": str(workflow_id)}


def signal_url_actor(execution_id: UUID | str) -> dict[str, str]:
    """Whoever holds a signal URL of the execution (infra.signal_urls): no login."""
    return {"type": "signal_url", "execution_id": str(execution_id)}


def read_actor(stored: Any) -> dict[str, str]:
    """An actor as read from the log: NULL (the system, or an event recorded before actors
    were) reads as `SYSTEM_ACTOR`."""
    if stored is None:
        return dict(SYSTEM_ACTOR)
    if isinstance(stored, str | bytes):
        stored = json.loads(stored)
    return dict(stored)


_ORIGIN: ContextVar[Origin] = ContextVar("linkflow_origin", default=SYSTEM)


def current_origin() -> Origin:
    """The origin of the request this task serves (SYSTEM outside a request)."""
    return _ORIGIN.get()


def set_origin(origin: Origin) -> None:
    """Set the origin of the current task (the gateway, once per request)."""
    _ORIGIN.set(origin)
