"""Group commit's batching rules (`infra.group_commit`) on an event store in memory
(`EventStore(settings, memory=True)`), without PostgreSQL: concurrent saves share one append and
keep their own positions; a save whose shared append fails (a conflict, a stale read, an event
too large) fails alone while the others of its batch are written; a save that read what another
one writes waits for a later batch. tests/integration/test_group_commit.py asserts the same on
PostgreSQL.

The batches are made deterministic without sleeping: the first leader's append waits on an
Event until the other saves are queued, which the test sees through the group commit's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands.context import CommandContext
from domain.workspace import Workspace
from infra.eventstore import EventStore
from infra.recorder import EventTooLarge, StaleRead
from infra.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NOWHERE = Settings(pg_host="192.0.2.1", pg_port=1)  # no PostgreSQL may be asked anything
WAIT_S = 10.0  # a deadline for waits that end at once when the code is right


class WatchedLock:
    """A stand-in for the group commit's lock that wakes `wait_for` callers at each release, so a
    test can wait until a number of saves are queued."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())

    def __enter__(self) -> WatchedLock:
        self._condition.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._condition.notify_all()
        self._condition.release()

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self._condition:
            assert self._condition.wait_for(predicate, WAIT_S), "the saves were not queued"


class Batches:
    """The store's appends, recorded (events per append, whether it was written); the first
    one waits until `release` so that the saves made meanwhile queue up behind it."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.appends: list[tuple[int, bool]] = []
        self.entered, self.gate = threading.Event(), threading.Event()
        self.lock = WatchedLock()
        commit = store.group_commit
        commit._lock = self.lock  # type: ignore[assignment]
        original = commit._put

        def put(events: Sequence[Any], reads: Mapping[UUID, int], origins: Any) -> list[int]:
            if not self.entered.is_set():
                self.entered.set()
                assert self.gate.wait(WAIT_S)
            try:
                positions = original(events, reads, origins)
            except Exception:
                self.appends.append((len(events), False))
                raise
            self.appends.append((len(events), True))
            return positions

        commit._put = put

    def queued(self, count: int) -> None:
        """Wait until `count` saves wait behind the first leader's append."""
        assert self.entered.wait(WAIT_S)
        self.lock.wait_for(lambda: len(self.store.group_commit._queue) == count)

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def store() -> Iterator[EventStore]:
    event_store = EventStore(NOWHERE, memory=True)
    yield event_store
    event_store.close()


def saved(store: EventStore, name: str) -> Workspace:
    ws = Workspace.create(uuid4(), name, "owner", NOW)
    store.append(ws)
    return ws


def outcome(save: Callable[[], int]) -> int | BaseException:
    try:
        return save()
    except (IntegrityError, StaleRead, EventTooLarge) as exc:
        return exc


def in_batch(
    store: EventStore, batches: Batches, pool: ThreadPoolExecutor, saves: list[Callable[[], int]]
) -> list[int | BaseException]:
    """Run a first save that leads (its append held at the gate), then `saves`, each queued
    behind it in this order; release the gate; the outcomes of `saves`."""
    first = pool.submit(store.append, Workspace.create(uuid4(), "first", "owner", NOW))
    batches.queued(0)
    queued: list[Future[int | BaseException]] = []
    for n, save in enumerate(saves, 1):
        queued.append(pool.submit(outcome, save))
        batches.queued(n)
    batches.release()
    assert isinstance(first.result(WAIT_S), int)
    return [future.result(WAIT_S) for future in queued]


def test_concurrent_saves_share_one_append_and_keep_their_positions(store: EventStore) -> None:
    batches = Batches(store)
    workspaces = []
    for i in range(15):
        ws = Workspace.create(uuid4(), f"w{i}", "owner", NOW)
        ws.add_member("u", "viewer", NOW)
        workspaces.append(ws)
    with ThreadPoolExecutor(16) as pool:
        saves: list[Callable[[], int]] = [lambda ws=ws: store.append(ws) for ws in workspaces]
        positions = in_batch(store, batches, pool, saves)
    assert batches.appends == [(1, True), (30, True)]  # the leader's own, then all the others
    assert len(set(positions)) == 15
    for ws, position in zip(workspaces, positions, strict=True):
        loaded = store.copy_fresh(Workspace, ws.id)
        assert loaded.version == 2 and loaded.role_of("u") == "viewer"
        assert store.position_of(ws.id) == position  # its own last event, not the batch's


def test_a_conflicting_save_fails_alone(store: EventStore) -> None:
    base = saved(store, "base")
    winner, loser = store.copy_fresh(Workspace, base.id), store.copy_fresh(Workspace, base.id)
    winner.add_member("a", "viewer", NOW)
    loser.add_member("b", "viewer", NOW)  # same version: only one of them can win
    store.append(winner)
    others = [Workspace.create(uuid4(), f"o{i}", "owner", NOW) for i in range(6)]
    batches = Batches(store)
    with ThreadPoolExecutor(8) as pool:
        saves: list[Callable[[], int]] = [lambda ws=ws: store.append(ws) for ws in [loser, *others]]
        outcomes = in_batch(store, batches, pool, saves)
    # The shared append failed; each save of the batch was then appended on its own.
    assert batches.appends == [(1, True), (7, False), (1, False), *[(1, True)] * 6]
    assert isinstance(outcomes[0], IntegrityError)
    assert all(isinstance(o, int) for o in outcomes[1:]), outcomes
    for other in others:
        assert store.copy_fresh(Workspace, other.id).version == 1
    members = store.copy_fresh(Workspace, base.id).members
    assert "a" in members and "b" not in members


def test_a_save_whose_read_went_stale_fails_alone(store: EventStore) -> None:
    read = saved(store, "read")
    changed = store.copy_fresh(Workspace, read.id)
    changed.add_member("c", "viewer", NOW)
    store.append(changed)  # `read` is now at version 2
    stale = Workspace.create(uuid4(), "stale", "owner", NOW)
    others = [Workspace.create(uuid4(), f"o{i}", "owner", NOW) for i in range(6)]

    def save(aggregate: Workspace) -> int:
        checked = {read.id: 1} if aggregate is stale else {read.id: 2}
        return CommandContext(store, reads=checked).save(aggregate)

    batches = Batches(store)
    with ThreadPoolExecutor(8) as pool:
        saves: list[Callable[[], int]] = [lambda ws=ws: save(ws) for ws in [stale, *others]]
        outcomes = in_batch(store, batches, pool, saves)
    assert batches.appends == [(1, True), (7, False), (1, False), *[(1, True)] * 6]
    assert isinstance(outcomes[0], StaleRead) and outcomes[0].ids == [read.id]
    assert all(isinstance(o, int) for o in outcomes[1:]), outcomes
    with pytest.raises(AggregateNotFoundError):
        store.copy_fresh(Workspace, stale.id)


def test_a_save_reading_what_another_writes_waits_for_the_next_batch(store: EventStore) -> None:
    """Checked in one append with the write, the read would pass against the state before it:
    the reader goes in the next batch, where its check sees the write, and fails."""
    read = saved(store, "read")
    writer = store.copy_fresh(Workspace, read.id)
    writer.add_member("w", "viewer", NOW)
    reader = Workspace.create(uuid4(), "reader", "owner", NOW)
    unrelated = Workspace.create(uuid4(), "unrelated", "owner", NOW)

    def read_then_save() -> int:
        return CommandContext(store, reads={read.id: 1}).save(reader)

    batches = Batches(store)
    with ThreadPoolExecutor(4) as pool:
        outcomes = in_batch(
            store,
            batches,
            pool,
            [lambda: store.append(writer), read_then_save, lambda: store.append(unrelated)],
        )
    # The writer and the unrelated save share the second append; the reader waits for a third.
    assert batches.appends == [(1, True), (2, True), (1, False)]
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    assert isinstance(outcomes[1], StaleRead) and outcomes[1].ids == [read.id]


def test_an_event_too_large_fails_its_save_alone() -> None:
    store = EventStore(NOWHERE.model_copy(update={"max_event_bytes": 1000}), memory=True)
    try:
        big = Workspace.create(uuid4(), "b" * 2000, "owner", NOW)
        fine = [Workspace.create(uuid4(), f"f{i}", "owner", NOW) for i in range(4)]
        batches = Batches(store)
        with ThreadPoolExecutor(6) as pool:
            saves: list[Callable[[], int]] = [lambda ws=ws: store.append(ws) for ws in [big, *fine]]
            outcomes = in_batch(store, batches, pool, saves)
        assert batches.appends == [(1, True), (5, False), (1, False), *[(1, True)] * 4]
        assert isinstance(outcomes[0], EventTooLarge)
        assert all(isinstance(o, int) for o in outcomes[1:]), outcomes
        with pytest.raises(AggregateNotFoundError):
            store.copy_fresh(Workspace, big.id)
    finally:
        store.close()
