"""One command's run: what it read, what it holds, what it will save.

The bus (`commands.bus`) creates a `CommandContext` for each run of a command and hands it to
the handler, which reads and saves only through it; afterwards the bus reads the outcome from
the same object (what was saved, what was read as held, the save recorded on the event loop).
Nothing is carried on the thread.

Reads:
- `read(cls, id)`: *read as held, checked at save*. The aggregate as this process holds it,
  asking PostgreSQL nothing once it is held; the version read is recorded in `reads`, and the
  command's save commits only if the aggregate is still at that version (else the recorder
  raises `infra.recorder.StaleRead`, and the bus runs the command again on fresh reads). For
  reading only: the caller must not change what it gets.
- `load(cls, id)`: *a copy to change and save*. A copy of the aggregate as this process holds
  it; if the aggregate has moved on, saving the copy conflicts (IntegrityError: its next
  version exists) and the bus runs the command again on fresh reads.
- On a run with `fresh` set (a retry), both bring the aggregate up to date first.
- `on_loop`: the run is on the event loop, so nothing in it may wait: a read of what is not
  held raises `NotHeld`, and the save is only recorded (`deferred`), for the bus to write with
  `GroupCommit.save_async`.

The run's `origin` (`infra.origin`: who caused the command, in which request) is saved beside
every event it saves, never in the events themselves.

Imported by `commands/` (the bus and the handlers); it reads and saves through `infra.eventstore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from domain.limits import DEFAULT_LIMITS, Limits
from infra.eventstore import EventStore
from infra.group_commit import NO_READS
from infra.origin import SYSTEM, Origin

A = TypeVar("A", bound=Aggregate)


class NotHeld(Exception):
    """A command on the event loop needed what this process does not hold (reading it would
    wait), or is too large to decide there: run it in a thread instead."""


class DeferredSave(NamedTuple):
    """A save recorded on the event loop, for the bus to write asynchronously."""

    aggregates: Sequence[Aggregate]
    events: list[Any]
    reads: dict[UUID, int]
    origin: Origin


class CommandContext:
    def __init__(
        self,
        store: EventStore,
        limits: Limits = DEFAULT_LIMITS,
        reads: Mapping[UUID, int] = NO_READS,
        fresh: bool = False,
        on_loop: bool = False,
        origin: Origin = SYSTEM,
    ) -> None:
        self.store = store
        self.origin = origin
        self.limits = limits
        self.fresh = fresh
        self.on_loop = on_loop
        # Versions the save is conditional on: the caller's, and this run's held reads.
        self.reads: dict[UUID, int] = dict(reads)
        # Ids read as held, asking PostgreSQL nothing (`read`, `load`): a refusal or a conflict
        # decided on them is decided again on fresh reads.
        self.held: set[UUID] = set()
        self.saved: list[Any] = []  # the events saved, once durable
        self.deferred: list[DeferredSave] = []  # on the event loop: the saves to write

    def read(self, cls: type[A], aggregate_id: UUID) -> A:
        """Read as held, checked at save (see the module's docstring). AggregateNotFoundError
        (`infra.eventstore.WrongAggregate` for an id of another kind)."""
        held = self.store.read_held(cls, aggregate_id, wait=not self.on_loop, refresh=self.fresh)
        if held is None:
            raise NotHeld(aggregate_id)
        self.check({aggregate_id: held.version})
        self.held.add(aggregate_id)
        if held.aggregate is None:
            raise AggregateNotFoundError(aggregate_id)
        return held.aggregate  # type: ignore[no-any-return]

    def load(self, cls: type[A], aggregate_id: UUID) -> A:
        """A copy to change and save (see the module's docstring). AggregateNotFoundError, as
        `read`."""
        if not self.fresh:
            copy = self.store.copy_held(cls, aggregate_id, wait=not self.on_loop)
            if copy is not None:
                self.held.add(aggregate_id)
                return copy
            if self.on_loop:
                raise NotHeld(aggregate_id)
        return self.store.copy_fresh(cls, aggregate_id)

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether any aggregate has this id (asks PostgreSQL unless held)."""
        return self.store.exists(aggregate_id)

    def position_of(self, aggregate_id: UUID) -> int:
        """The position of the aggregate's latest event (for answering a repeated command)."""
        return self.store.position_of(aggregate_id)

    def check(self, reads: Mapping[UUID, int]) -> None:
        """Make the save conditional on these versions too."""
        for aggregate_id, version in reads.items():
            self.reads[aggregate_id] = min(version, self.reads.get(aggregate_id, version))

    def leave_loop(self) -> None:
        """On the event loop: hand the command to a thread (NotHeld), because deciding it would
        hold the loop too long (a large workflow). Elsewhere nothing."""
        if self.on_loop:
            raise NotHeld("too large to decide on the event loop")

    def save(self, *aggregates: Aggregate) -> int:
        """Save the aggregates' new events atomically (group-committed with other commands'
        saves, see `infra.group_commit`), if this run's checked reads still hold; the position
        of the last event. On the event loop the save is only recorded (0)."""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if self.on_loop:
            self.deferred.append(DeferredSave(aggregates, events, dict(self.reads), self.origin))
            return 0
        position = self.store.group_commit.save(events, self.reads, self.origin)
        self.store.keep_saved(aggregates)  # as `EventStore.append`, keeping the events
        self.saved.extend(events)
        return position
