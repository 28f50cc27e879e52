"""The event store: an `eventsourcing` Application on PostgreSQL (psycopg 3), the only place
aggregates live. Synchronous (the library has no asyncio API); async code calls it through a
thread pool (see commands.bus). Imported by `commands/` (writes) and by readers of the log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from infra.group_commit import GroupCommit
from infra.settings import Settings

A = TypeVar("A", bound=Aggregate)

APP_NAME = "LinkFlow"
EVENTS_TABLE = "linkflow_events"
IDLE_CONNECTIONS = 1


def eventsourcing_env(settings: Settings, create_table: bool = False) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": settings.pg_db,
        "POSTGRES_HOST": settings.pg_host,
        "POSTGRES_PORT": str(settings.pg_port),
        "POSTGRES_USER": settings.pg_user,
        "POSTGRES_PASSWORD": settings.pg_password,
        # The library opens POOL_SIZE connections at once and grows by MAX_OVERFLOW on demand:
        # keep the idle footprint small (roles that only read the log barely use this pool).
        "POSTGRES_POOL_SIZE": str(IDLE_CONNECTIONS),
        "POSTGRES_MAX_OVERFLOW": str(max(settings.pg_pool_size - IDLE_CONNECTIONS, 0)),
        "POSTGRES_LOCK_TIMEOUT": "5",
        "CREATE_TABLE": "y" if create_table else "n",
        "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        # Appends in one round trip (infra/recorder.py; the function is migration 008).
        "APPLICATION_RECORDER_TOPIC": "infra.recorder:LinkFlowRecorder",
    }


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate` without its per-event `assert isinstance(event,
    CanMutateProtocol)`: a runtime-checkable Protocol check, ~3 % of a worker's CPU."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class EventStore(Application):
    """LinkFlow's one event-sourced application (table `linkflow_events`)."""

    name = APP_NAME

    def __init__(self, settings: Settings, create_table: bool = False) -> None:
        super().__init__(env=eventsourcing_env(settings, create_table))
        self.group_commit = GroupCommit(self._put)
        self._captures = threading.local()

    def load(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate, current, as a copy a command may change and save."""
        return self._get(cls, aggregate_id, copy=True)

    def read(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate, current, for reading only: the cached instance itself (no copy), so
        the caller must not change it (lookups, and the workflow a start reads)."""
        return self._get(cls, aggregate_id, copy=False)

    def _get(self, cls: type[A], aggregate_id: UUID, copy: bool) -> A:
        aggregate: Aggregate = self.repository.get(
            aggregate_id, deepcopy_from_cache=copy, projector_func=_project
        )
        if not isinstance(aggregate, cls):
            raise TypeError(f"{aggregate_id} is a {type(aggregate).__name__}, not {cls.__name__}")
        return aggregate

    def save_all(self, *aggregates: Aggregate) -> int:
        """Save the aggregates' new events atomically (group-committed with other threads'
        saves, see `infra.group_commit`); the position (notification id) of the last event."""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        position = self.group_commit.save(events)
        captured: list[Any] | None = getattr(self._captures, "events", None)
        if captured is not None:
            captured.extend(events)
        return position

    @contextmanager
    def capture(self) -> Iterator[list[Any]]:
        """The events this thread saves inside the block, once each save is durable."""
        events: list[Any] = []
        self._captures.events = events
        try:
            yield events
        finally:
            self._captures.events = None

    def _put(self, events: Sequence[Any]) -> list[int]:
        return [recording.notification.id for recording in self.events.put(events)]

    def decode(self, oid: UUID, version: int, topic: str, state: bytes) -> Any:
        """Turn one stored event (from the log or a stream message) into its domain event."""
        return self.mapper.to_domain_event(
            StoredEvent(originator_id=oid, originator_version=version, topic=topic, state=state)
        )

    def position_of(self, aggregate_id: UUID) -> int:
        """The position of the aggregate's latest event (for idempotent replays of commands)."""
        with self.factory.datastore.get_connection() as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(
                f"SELECT max(notification_id) AS p FROM {EVENTS_TABLE} WHERE originator_id = %s",
                (aggregate_id,),
            )
            row = cur.fetchone()
        return int(row["p"] or 0)
