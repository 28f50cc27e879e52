"""Group commit on the real PostgreSQL: concurrent saves share transactions, each keeps its own
atomicity and position, and a conflicting save, or one whose checked read went stale, fails
alone."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands.context import CommandContext
from domain.workspace import Workspace
from infra.eventstore import EventStore
from infra.recorder import StaleRead
from infra.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(settings: Settings) -> EventStore:
    event_store = EventStore(settings)
    yield event_store
    event_store.close()


def counted_puts(store: EventStore) -> tuple[list[int], Any]:
    """Make the group commit record each transaction's size; the original put, to restore."""
    transactions: list[int] = []
    original = store._put

    def counting_put(events: Any, reads: Any, origins: Any) -> list[int]:
        transactions.append(len(events))
        return original(events, reads, origins)

    store.group_commit._put = counting_put
    return transactions, original


def test_concurrent_saves_share_transactions_and_keep_their_positions(store: EventStore) -> None:
    transactions, original = counted_puts(store)
    barrier = threading.Barrier(16)

    def save_one(i: int) -> tuple[Workspace, int]:
        ws = Workspace.create(uuid4(), f"w{i}", "owner", NOW)
        ws.add_member("u", "viewer", NOW)
        barrier.wait()
        return ws, store.append(ws)

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(save_one, range(16)))
    finally:
        store.group_commit._put = original
    assert len(transactions) < 16, "concurrent saves should have been grouped"
    assert sum(transactions) == 32
    positions = [position for _, position in results]
    assert len(set(positions)) == 16
    for ws, position in results:
        loaded = store.copy_fresh(Workspace, ws.id)
        assert loaded.version == 2 and loaded.role_of("u") == "viewer"
        assert store.position_of(ws.id) == position  # its own last event, not the batch's


def test_a_conflicting_save_fails_alone(store: EventStore) -> None:
    base = Workspace.create(uuid4(), "w", "owner", NOW)
    store.append(base)
    first, second = store.copy_fresh(Workspace, base.id), store.copy_fresh(Workspace, base.id)
    first.add_member("a", "viewer", NOW)
    second.add_member("b", "viewer", NOW)  # same version: only one of them can win
    others = [Workspace.create(uuid4(), f"o{i}", "owner", NOW) for i in range(6)]
    barrier = threading.Barrier(8)

    def save(aggregate: Workspace) -> BaseException | int:
        barrier.wait()
        try:
            return store.append(aggregate)
        except IntegrityError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(save, [first, second, *others]))
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    for other in others:
        assert store.copy_fresh(Workspace, other.id).version == 1
    members = store.copy_fresh(Workspace, base.id).members
    assert ("a" in members) != ("b" in members)


def test_a_save_whose_read_went_stale_fails_alone(store: EventStore) -> None:
    read = Workspace.create(uuid4(), "read", "owner", NOW)
    store.append(read)
    changed = store.copy_fresh(Workspace, read.id)
    changed.add_member("c", "viewer", NOW)
    store.append(changed)  # `read` is now at version 2
    stale = Workspace.create(uuid4(), "stale", "owner", NOW)
    others = [Workspace.create(uuid4(), f"o{i}", "owner", NOW) for i in range(6)]
    barrier = threading.Barrier(7)

    def save(aggregate: Workspace) -> BaseException | int:
        barrier.wait()
        checked = {read.id: 1} if aggregate is stale else {read.id: 2}
        try:
            return CommandContext(store, reads=checked).save(aggregate)
        except StaleRead as exc:
            return exc

    with ThreadPoolExecutor(7) as pool:
        outcomes = list(pool.map(save, [stale, *others]))
    assert isinstance(outcomes[0], StaleRead) and outcomes[0].ids == [read.id]
    assert all(isinstance(o, int) for o in outcomes[1:]), outcomes
    with pytest.raises(AggregateNotFoundError):
        store.copy_fresh(Workspace, stale.id)


def test_a_checked_read_of_a_held_aggregate_asks_nothing_and_a_stale_one_is_retried(
    settings: Settings,
) -> None:
    """Two event stores stand for two gateway processes."""
    here, there = EventStore(settings), EventStore(settings)
    try:
        ws = Workspace.create(uuid4(), "w", "owner", NOW)
        here.append(ws)
        loads: list[object] = []
        original = here.recorder.select_events

        def counting(*args: Any, **kwargs: Any) -> Any:
            loads.append(args)
            return original(*args, **kwargs)

        here.recorder.select_events = counting  # type: ignore[method-assign]
        assert CommandContext(here).read(Workspace, ws.id).version == 1  # loads it
        assert CommandContext(here).read(Workspace, ws.id).version == 1  # held: no query
        assert len(loads) == 1

        elsewhere = there.copy_fresh(Workspace, ws.id)
        elsewhere.add_member("m", "viewer", NOW)
        there.append(elsewhere)
        command = CommandContext(here)
        command.read(Workspace, ws.id)
        with pytest.raises(StaleRead):
            command.save(Workspace.create(uuid4(), "x", "owner", NOW))
        here.forget([ws.id])  # what the bus does on StaleRead
        assert CommandContext(here).read(Workspace, ws.id).role_of("m") == "viewer"
    finally:
        here.close()
        there.close()


async def test_event_loop_saves_join_the_batches_and_a_conflict_fails_alone(
    store: EventStore,
) -> None:
    base = Workspace.create(uuid4(), "w", "owner", NOW)
    store.append(base)
    first, second = store.copy_fresh(Workspace, base.id), store.copy_fresh(Workspace, base.id)
    first.add_member("a", "viewer", NOW)
    second.add_member("b", "viewer", NOW)  # same version: only one of them can win
    others = [Workspace.create(uuid4(), f"l{i}", "owner", NOW) for i in range(12)]
    threaded = [Workspace.create(uuid4(), f"t{i}", "owner", NOW) for i in range(4)]
    transactions, original = counted_puts(store)

    async def save(aggregate: Workspace) -> BaseException | int:
        try:
            events = list(aggregate.collect_events())
            return await store.group_commit.save_async(events, {})
        except IntegrityError as exc:
            return exc

    try:
        in_threads = [asyncio.to_thread(store.append, ws) for ws in threaded]
        outcomes = await asyncio.gather(*(save(a) for a in [first, second, *others]), *in_threads)
    finally:
        store.group_commit._put = original
    assert max(transactions) >= 10, transactions  # loop saves shared a transaction
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    positions = [o for o in outcomes if isinstance(o, int)]
    assert len(set(positions)) == len(positions) == 1 + len(others) + len(threaded)
    for aggregate in [*others, *threaded]:
        assert store.position_of(aggregate.id) in positions
    members = store.copy_fresh(Workspace, base.id).members
    assert ("a" in members) != ("b" in members)
