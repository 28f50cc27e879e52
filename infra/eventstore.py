"""The event store: an `eventsourcing` Application on PostgreSQL (psycopg 3), the only place
aggregates live. Synchronous (the library has no asyncio API); async code calls it through a
thread pool (see commands.bus). Imported by `commands/` (writes) and by readers of the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from copy import deepcopy
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from infra.aggregate_cache import BoundedCache
from infra.group_commit import NO_READS, GroupCommit
from infra.recorder import LinkFlowRecorder
from infra.settings import Settings

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

APP_NAME = "LinkFlow"
EVENTS_TABLE = "linkflow_events"
IDLE_CONNECTIONS = 1
ABSENT_CACHE_SIZE = 10_000


class Peeked(NamedTuple):
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


def _of_class(cls: type[A], aggregate_id: UUID, aggregate: Any) -> A:
    if not isinstance(aggregate, cls):
        raise TypeError(f"{aggregate_id} is a {type(aggregate).__name__}, not {cls.__name__}")
    return aggregate


class DeferredSave(NamedTuple):
    """A save recorded on the event loop (see `EventStore.capture`), to write asynchronously."""

    aggregates: Sequence[Aggregate]
    events: list[Any]
    reads: dict[UUID, int]


class NotHeld(Exception):
    """A command on the event loop needed an aggregate this process does not hold (reading it
    would wait): run it in a thread instead."""


class EventStore(Application):
    """LinkFlow's one event-sourced application (table `linkflow_events`)."""

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
        self._captures = threading.local()
        # Ids a checked read found without events (the workspace variables of a workspace that
        # never set one, say): remembered so that the next checked read asks nothing either.
        self._absent: LRUCache[UUID, bool] = LRUCache(ABSENT_CACHE_SIZE)

    def load(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate as a copy a command may change and save. Inside a command (`capture`)
        it is a copy of the aggregate as this process holds it, asking PostgreSQL nothing: if
        the aggregate has moved on, the save conflicts (IntegrityError: its next version
        exists), and the bus runs the command again on fresh reads, as it does when such a
        command fails or saves nothing. Elsewhere, and on those runs, it is brought up to date
        first."""
        on_loop = getattr(self._captures, "deferred", None) is not None
        if on_loop or getattr(self._captures, "fresh", True) is False:
            held = self._held_copy(aggregate_id, blocking=not on_loop)
            if held is None and on_loop:
                raise NotHeld(aggregate_id)
            if held is not None:
                self._captures.held.add(aggregate_id)
                return _of_class(cls, aggregate_id, held)
        return self._get(cls, aggregate_id, copy=True)

    def _held_copy(self, aggregate_id: UUID, blocking: bool = True) -> Any:
        """A copy of the cached aggregate (None: not held, or its lock busy and not
        `blocking`), made under the repository's fast-forward lock so that no event is
        half-applied to what is copied."""
        return self._locked(aggregate_id, blocking, deepcopy)

    def _locked(self, aggregate_id: UUID, blocking: bool, look: Callable[[Any], T]) -> T | None:
        """`look` at the cached aggregate under the repository's fast-forward lock (None: not
        cached, or the lock busy and not `blocking`)."""
        try:
            aggregate = self.repository.cache.get(aggregate_id)  # type: ignore[union-attr]
        except KeyError:
            return None
        repository = self.repository
        lock = repository._use_fastforward_lock(aggregate_id)
        try:
            if not lock.acquire(blocking=blocking):
                return None
            try:
                return look(aggregate)
            finally:
                lock.release()
        finally:
            repository._disuse_fastforward_lock(aggregate_id)

    def read(self, cls: type[A], aggregate_id: UUID) -> A:
        """The aggregate, current, for reading only: the cached instance itself (no copy), so
        the caller must not change it (lookups, and the workflow a start reads)."""
        return self._get(cls, aggregate_id, copy=False)

    def _get(self, cls: type[A], aggregate_id: UUID, copy: bool) -> A:
        aggregate: Aggregate = self.repository.get(
            aggregate_id, deepcopy_from_cache=copy, projector_func=_project
        )
        return _of_class(cls, aggregate_id, aggregate)

    def peek(self, aggregate_id: UUID, blocking: bool = True) -> Peeked | None:
        """The aggregate as this process holds it, asking PostgreSQL nothing (None: not held, or,
        if not `blocking`, being brought up to date by another thread). Its version is read
        under the repository's fast-forward lock, so no event is half-applied to it: state read
        afterwards is at least as new as that version. Safe on the event loop with
        `blocking=False`."""
        if self._has_absent(aggregate_id):
            return Peeked(None, 0)
        return self._locked(aggregate_id, blocking, lambda a: Peeked(a, a.version))

    def _has_absent(self, aggregate_id: UUID) -> bool:
        try:
            self._absent.get(aggregate_id)
        except KeyError:
            return False
        return True

    def hold(self, cls: type[A], aggregate_id: UUID) -> Peeked:
        """`peek`, after loading the aggregate (as `read` does) if this process did not hold
        it; remembers an aggregate that does not exist (version 0). TypeError as `read`. On a
        command's fresh run (see `load`), brought up to date first."""
        fresh = getattr(self._captures, "fresh", False)
        on_loop = getattr(self._captures, "deferred", None) is not None
        peeked = None if fresh else self.peek(aggregate_id, blocking=not on_loop)
        if peeked is None:
            if on_loop:
                raise NotHeld(aggregate_id)
            with suppress(KeyError):
                self._absent.get(aggregate_id, evict=True)
            try:
                self.read(cls, aggregate_id)  # loads it, or brings it up to date
            except AggregateNotFoundError:
                self._absent.put(aggregate_id, True)
            peeked = self.peek(aggregate_id) or Peeked(None, 0)
        if peeked.aggregate is not None:
            _of_class(cls, aggregate_id, peeked.aggregate)
        return peeked

    def read_checked(self, cls: type[A], aggregate_id: UUID) -> A:
        """For a command (inside `capture`): the aggregate as this process holds it, read
        without asking PostgreSQL whether it changed since (only a first read loads it). The
        version read is recorded, and the command's save commits only if the aggregate is still
        at that version (else `infra.recorder.StaleRead`, and the bus runs the command again
        on fresh reads). Raises AggregateNotFoundError and TypeError as `read` does; like
        `read`, the caller must not change what it gets."""
        peeked = self.hold(cls, aggregate_id)
        self.require({aggregate_id: peeked.version})
        self._captures.held.add(aggregate_id)
        if peeked.aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        return peeked.aggregate  # type: ignore[no-any-return]

    def require(self, reads: Mapping[UUID, int]) -> None:
        """Make this thread's next saves inside `capture` conditional on these versions (checks
        of reads made elsewhere, like a gateway's role check on the event loop)."""
        checks: dict[UUID, int] | None = getattr(self._captures, "reads", None)
        if checks is None:
            raise RuntimeError("checked reads are for commands, inside EventStore.capture")
        for aggregate_id, version in reads.items():
            checks[aggregate_id] = min(version, checks.get(aggregate_id, version))

    def forget(self, aggregate_ids: Iterable[UUID]) -> None:
        """Drop what this process holds of these aggregates (a stale role check, a refusal
        the gateway reads again)."""
        for aggregate_id in aggregate_ids:
            for cache in (self.repository.cache, self._absent):
                with suppress(KeyError):
                    cache.get(aggregate_id, evict=True)  # type: ignore[union-attr]

    def save_all(self, *aggregates: Aggregate) -> int:
        """Save the aggregates' new events atomically (group-committed with other threads'
        saves, see `infra.group_commit`), if this command's checked reads still hold; the
        position (notification id) of the last event."""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        reads: Mapping[UUID, int] = getattr(self._captures, "reads", None) or NO_READS
        deferred: list[DeferredSave] | None = getattr(self._captures, "deferred", None)
        if deferred is not None:  # on the event loop: the caller saves it (see capture)
            deferred.append(DeferredSave(aggregates, events, dict(reads)))
            return 0
        position = self.group_commit.save(events, reads)
        self.saved(aggregates)
        captured: list[Any] | None = getattr(self._captures, "events", None)
        if captured is not None:
            captured.extend(events)
        return position

    def saved(self, aggregates: Sequence[Aggregate]) -> None:
        """Upkeep once aggregates are saved: hold them as saved, forget them as missing."""
        cache = self.repository.cache
        for aggregate in aggregates:
            if self._has_absent(aggregate.id):
                self.forget([aggregate.id])  # it exists now
            try:  # held: hold it as saved (a command does not change what it saved)
                cache.get(aggregate.id)  # type: ignore[union-attr]
            except KeyError:
                continue
            cache.put(aggregate.id, aggregate)  # type: ignore[union-attr]

    @contextmanager
    def capture(
        self, reads: Mapping[UUID, int] = NO_READS, fresh: bool = False, on_loop: bool = False
    ) -> Iterator[list[Any]]:
        """One command's block: the events this thread saves inside it, once each save is
        durable; saves are conditional on `reads` and on the block's `read_checked` calls.
        `fresh`: every load and checked read asks PostgreSQL (see `load`). `on_loop`: the
        block runs on an event loop, so nothing in it may wait: reads of what is not held
        raise NotHeld, and saves are only recorded (`deferred_saves`; the caller writes them
        with `GroupCommit.save_async`, then calls `saved`)."""
        events: list[Any] = []
        self._captures.events = events
        self._captures.reads = dict(reads)
        self._captures.held = set()
        self._captures.fresh = fresh
        self._captures.deferred = [] if on_loop else None
        try:
            yield events
        finally:
            self._captures.last_deferred = self._captures.deferred
            self._captures.events = None
            self._captures.reads = None
            self._captures.fresh = None
            self._captures.deferred = None

    def leave_loop(self) -> None:
        """Inside `capture(on_loop=True)`: hand the command to a thread (NotHeld), because
        deciding it would hold the event loop too long (a large workflow). Elsewhere nothing."""
        if getattr(self._captures, "deferred", None) is not None:
            raise NotHeld("too large to decide on the event loop")

    def deferred_saves(self) -> list[DeferredSave]:
        """The saves this thread's last `capture(on_loop=True)` block recorded."""
        return list(getattr(self._captures, "last_deferred", None) or ())

    def last_held(self) -> set[UUID]:
        """The ids this thread's last `capture` block read as held, asking PostgreSQL nothing
        (`load`, `read_checked`)."""
        return set(getattr(self._captures, "held", ()))

    def _put(self, events: Sequence[Any], reads: Mapping[UUID, int]) -> list[int]:
        return [recording.notification.id for recording in self.events.put(events, reads=reads)]

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
