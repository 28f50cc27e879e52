"""The event store: an `eventsourcing` Application on PostgreSQL (psycopg 3), the only place
aggregates live. Synchronous (the library has no asyncio API); async code calls it through a
thread pool (see commands.bus). Imported by `commands/` (writes,
and the lookups), and by readers of the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from copy import deepcopy
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from domain.base import OUTSIDE_WORKSPACE_LOGS
from infra.aggregate_cache import BoundedCache
from infra.compat.eventsourcing import fastforward_lock
from infra.group_commit import NO_READS, GroupCommit
from infra.origin import SYSTEM, Origin
from infra.recorder import EventMetadata, LinkFlowRecorder
from infra.settings import Settings

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

APP_NAME = "LinkFlow"
EVENTS_TABLE = "linkflow_events"
IDLE_CONNECTIONS = 1
ABSENT_CACHE_SIZE = 10_000


def workspace_of(event: Any) -> UUID | None:
    """The workspace whose log holds this domain event (None: none)."""
    workspace_id = getattr(event, "workspace_id", None)
    if workspace_id is None or type(event).__module__ in OUTSIDE_WORKSPACE_LOGS:
        return None
    return UUID(str(workspace_id))


class Held(NamedTuple):
    """What this process holds of an aggregate: the cached instance (None: known not to
    exist) and its version then (0: none)."""

    aggregate: Any
    version: int


def eventsourcing_env(
    settings: Settings, create_table: bool = False, *, memory: bool = False
) -> dict[str, str]:
    if memory:  # in memory, for tests (infra/memory_recorder.py): no PostgreSQL
        return {
            "PERSISTENCE_MODULE": "infra.memory_recorder:MemoryFactory",
            "APPLICATION_RECORDER_TOPIC": "infra.memory_recorder:MemoryRecorder",
            "RECORDER_MAX_EVENT_BYTES": str(settings.max_event_bytes),
            "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
            "AGGREGATE_CACHE_FASTFORWARD": "y",
        }
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
        # While PostgreSQL is away: a pooled connection is checked before use (one that died
        # with a restart is replaced, not failed on), and a command waits at most pg_wait_s
        # for a connection (the library hands this value to its pool as the checkout timeout;
        # whole seconds). gateways.bootstrap bounds the connect itself (infra.db).
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_CONNECT_TIMEOUT": str(settings.pg_connect_timeout),
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


class WrongAggregate(AggregateNotFoundError):
    """The id names an aggregate of another kind: to the caller, no aggregate of the kind it
    asked for (a subclass of the library's AggregateNotFoundError, distinct from TypeError)."""

    def __init__(self, aggregate_id: UUID, found: type, wanted: type) -> None:
        super().__init__(f"{aggregate_id} is a {found.__name__}, not a {wanted.__name__}")


def _of_class(cls: type[A], aggregate_id: UUID, aggregate: Any) -> A:
    if not isinstance(aggregate, cls):
        raise WrongAggregate(aggregate_id, type(aggregate), cls)
    return aggregate


class EventStore(Application):
    """LinkFlow's one event-sourced application (table `linkflow_events`).

    Its reads say what they guarantee: `read_fresh` and `copy_fresh` bring the aggregate up to
    date (one query for the events after the cached version); `read_held` and `copy_held`
    answer from what this process holds, asking PostgreSQL nothing. Commands read through their
    `commands.context.CommandContext`, which checks held reads when it saves."""

    name = APP_NAME

    def __init__(
        self, settings: Settings, create_table: bool = False, *, memory: bool = False
    ) -> None:
        super().__init__(env=eventsourcing_env(settings, create_table, memory=memory))
        if self.repository.cache is not None:  # bounded by bytes too (infra.aggregate_cache)
            self.repository.cache = BoundedCache(
                settings.aggregate_cache_size, settings.aggregate_cache_bytes
            )
        if isinstance(self.recorder, LinkFlowRecorder):  # the size backstop (infra.recorder)
            self.recorder.max_event_bytes = settings.max_event_bytes
        self.group_commit = GroupCommit(self._put)
        # Ids a held read found without events (the workspace variables of a workspace that
        # never set one, say): remembered so that the next held read asks nothing either.
        self._absent: LRUCache[UUID, bool] = LRUCache(ABSENT_CACHE_SIZE)

    def read_fresh(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate, current, for reading only: the cached instance itself (no copy), so
        the caller must not change it. AggregateNotFoundError (WrongAggregate for another
        kind)."""
        return self._get(cls, aggregate_id, copy=False)

    def copy_fresh(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate, current, as a copy the caller may change and save."""
        return self._get(cls, aggregate_id, copy=True)

    def _get(self, cls: type[A], aggregate_id: UUID, copy: bool) -> A:
        aggregate: Aggregate = self.repository.get(
            aggregate_id, deepcopy_from_cache=copy, projector_func=_project
        )
        return _of_class(cls, aggregate_id, aggregate)

    def read_held(
        self, cls: type[A], aggregate_id: UUID, wait: bool = True, refresh: bool = False
    ) -> Held | None:
        """The aggregate as this process holds it and its version then, asking PostgreSQL
        nothing once it is held; Held(None, 0) when it does not exist (remembered). Its
        version is read under the repository's fast-forward lock, so no event is half-applied
        to it: state read afterwards is at least as new as that version. Not held yet (or
        `refresh`): loaded, or brought up to date, first — unless not `wait`, which answers
        None instead of waiting for PostgreSQL or for another thread's update (safe on the
        event loop). WrongAggregate for another kind. The caller must not change it."""
        held = None if refresh else self._peek(aggregate_id, wait)
        if held is None:
            if not wait:
                return None
            with suppress(KeyError):
                self._absent.get(aggregate_id, evict=True)
            try:
                self.read_fresh(cls, aggregate_id)  # loads it, or brings it up to date
            except WrongAggregate:
                raise
            except AggregateNotFoundError:
                self._absent.put(aggregate_id, True)
            held = self._peek(aggregate_id, wait=True) or Held(None, 0)
        if held.aggregate is not None:
            _of_class(cls, aggregate_id, held.aggregate)
        return held

    def _peek(self, aggregate_id: UUID, wait: bool) -> Held | None:
        if self._known_absent(aggregate_id):
            return Held(None, 0)
        return self._locked(aggregate_id, wait, lambda a: Held(a, a.version))

    def copy_held(self, cls: type[A], aggregate_id: UUID, wait: bool = True) -> A | None:
        """A copy of the aggregate as this process holds it, to change and save (None: not
        held, or its lock busy and not `wait`); made under the repository's fast-forward lock
        so that no event is half-applied to what is copied. WrongAggregate for another kind."""
        copy = self._locked(aggregate_id, wait, deepcopy)
        return None if copy is None else _of_class(cls, aggregate_id, copy)

    def _locked(self, aggregate_id: UUID, wait: bool, look: Callable[[Any], T]) -> T | None:
        """`look` at the cached aggregate under the repository's fast-forward lock (None: not
        cached, or the lock busy and not `wait`)."""
        try:
            aggregate = self.repository.cache.get(aggregate_id)  # type: ignore[union-attr]
        except KeyError:
            return None
        with fastforward_lock(self.repository, aggregate_id, blocking=wait) as locked:
            return look(aggregate) if locked else None

    def _known_absent(self, aggregate_id: UUID) -> bool:
        try:
            self._absent.get(aggregate_id)
        except KeyError:
            return False
        return True

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether any aggregate has this id (asks PostgreSQL unless held)."""
        try:
            self.repository.get(aggregate_id, deepcopy_from_cache=False)  # only looked at
        except AggregateNotFoundError:
            return False
        return True

    def forget(self, aggregate_ids: Iterable[UUID]) -> None:
        """Drop what this process holds of these aggregates (a held read found stale)."""
        for aggregate_id in aggregate_ids:
            for cache in (self.repository.cache, self._absent):
                with suppress(KeyError):
                    cache.get(aggregate_id, evict=True)  # type: ignore[union-attr]

    def append(
        self,
        *aggregates: Aggregate,
        reads: Mapping[UUID, int] = NO_READS,
        origin: Origin = SYSTEM,
    ) -> int:
        """Save the aggregates' new events through the group commit (tools and tests; commands
        save through their `CommandContext`), then `keep_saved`. The position of the last
        event. (Not the library's `save`, which bypasses the group commit.)"""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        position = self.group_commit.save(events, reads, origin)
        self.keep_saved(aggregates)
        return position

    def keep_saved(self, aggregates: Sequence[Aggregate]) -> None:
        """Upkeep once aggregates are saved: hold them as saved, forget them as missing."""
        cache = self.repository.cache
        for aggregate in aggregates:
            if self._known_absent(aggregate.id):
                self.forget([aggregate.id])  # it exists now
            try:  # held: hold it as saved (a command does not change what it saved)
                cache.get(aggregate.id)  # type: ignore[union-attr]
            except KeyError:
                continue
            cache.put(aggregate.id, aggregate)  # type: ignore[union-attr]

    def _put(
        self, events: Sequence[Any], reads: Mapping[UUID, int], origins: Sequence[Origin]
    ) -> list[int]:
        metadata = [
            EventMetadata(origin, workspace_of(event))
            for event, origin in zip(events, origins, strict=True)
        ]
        recordings = self.events.put(events, reads=reads, metadata=metadata)
        return [recording.notification.id for recording in recordings]

    def close(self) -> None:
        self.group_commit.close()
        super().close()

    def decode(self, oid: UUID, version: int, topic: str, state: bytes) -> Any:
        """Turn one stored event (from the log or a stream message) into its domain event."""
        return self.mapper.to_domain_event(
            StoredEvent(originator_id=oid, originator_version=version, topic=topic, state=state)
        )

    def position_of(self, aggregate_id: UUID) -> int:
        """The position of the aggregate's latest event (for idempotent replays of commands)."""
        return self.recorder.position_of(aggregate_id)  # type: ignore[attr-defined]
