"""The recorder contract (`infra.recorder`), one body for every recorder: test functions that ask
for a `store` fixture, an `EventStore` whose events may hold at most `LIMIT` bytes of state.

A test module imports these functions and defines `store`: tests/unit/test_memory_recorder.py on
the in-memory recorder only (no PostgreSQL), tests/integration/test_recorder_contract.py on the
in-memory recorder and on PostgreSQL, the way the `eventsourcing` library runs one test case on
several recorders. Not collected itself (not a `test_*.py` file).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from infra.eventstore import EventStore
from infra.origin import SYSTEM, Origin, api_key_actor, user_actor
from infra.recorder import EventMetadata, EventTooLarge, StaleRead

TOPIC = "tests:Appended"
LIMIT = 1000  # the contract stores' max_event_bytes


def events(count: int, first_version: int = 1, oid: UUID | None = None) -> list[StoredEvent]:
    oid = oid or uuid4()
    return [StoredEvent(oid, first_version + i, TOPIC, b'{"n": %d}' % i) for i in range(count)]


def versions(store: EventStore, oid: UUID) -> list[int]:
    return [e.originator_version for e in store.recorder.select_events(oid)]


def test_the_limit_comes_from_the_settings(store: EventStore) -> None:
    assert store.recorder.max_event_bytes == LIMIT  # type: ignore[attr-defined]


def test_ids_come_back_in_order_and_name_the_events(store: EventStore) -> None:
    appended = events(5)
    ids = store.recorder.insert_events(appended)
    assert ids is not None and len(ids) == 5
    assert ids == sorted(ids) and len(set(ids)) == 5
    later = store.recorder.insert_events(events(2))
    assert later is not None and min(later) > max(ids)
    # Each id is its event's place in the log: reading the log from the first one finds them.
    read = store.recorder.select_notifications(ids[0], limit=5, stop=ids[-1])
    assert [(n.id, n.originator_id, n.originator_version, n.state) for n in read] == [
        (i, e.originator_id, e.originator_version, e.state)
        for i, e in zip(ids, appended, strict=True)
    ]


def test_an_empty_append_writes_nothing(store: EventStore) -> None:
    before = store.recorder.max_notification_id()
    assert store.recorder.insert_events([]) == []
    assert store.recorder.max_notification_id() == before


def test_a_duplicate_version_refuses_the_whole_append(store: EventStore) -> None:
    first = events(2)
    store.recorder.insert_events(first)
    oid = first[0].originator_id
    other = uuid4()
    again = [
        StoredEvent(other, 1, TOPIC, b"{}"),  # another aggregate's, in the same append
        StoredEvent(oid, 3, TOPIC, b"{}"),
        StoredEvent(oid, 2, TOPIC, b"{}"),  # exists
    ]
    with pytest.raises(IntegrityError):
        store.recorder.insert_events(again)
    assert versions(store, oid) == [1, 2]  # version 3 was not kept
    assert versions(store, other) == []  # nor the other aggregate's event


def test_a_version_twice_in_one_append_is_refused(store: EventStore) -> None:
    oid = uuid4()
    twice = [StoredEvent(oid, 1, TOPIC, b"{}"), StoredEvent(oid, 1, TOPIC, b"{}")]
    with pytest.raises(IntegrityError):
        store.recorder.insert_events(twice)
    assert versions(store, oid) == []


def test_an_append_whose_read_is_current_is_written(store: EventStore) -> None:
    read = events(2)
    store.recorder.insert_events(read)
    appended = events(1)
    never_written = uuid4()
    reads = {read[0].originator_id: 2, never_written: 0}  # 0: read as "does not exist"
    ids = store.recorder.insert_events(appended, reads=reads)
    assert ids is not None and len(ids) == 1
    assert versions(store, appended[0].originator_id) == [1]


def test_an_append_whose_read_is_stale_writes_nothing_and_names_it(store: EventStore) -> None:
    read, created, current = events(3), events(1), events(1)
    for written in (read, created, current):
        store.recorder.insert_events(written)
    last = store.recorder.max_notification_id()
    appended = events(2)
    reads = {
        read[0].originator_id: 2,  # version 3 came after it
        created[0].originator_id: 0,  # read as missing; it exists
        current[0].originator_id: 1,  # still current
    }
    with pytest.raises(StaleRead) as refused:
        store.recorder.insert_events(appended, reads=reads)
    assert set(refused.value.ids) == {read[0].originator_id, created[0].originator_id}
    assert versions(store, appended[0].originator_id) == []
    assert store.recorder.max_notification_id() == last  # nothing at all was appended


def test_a_stale_read_wins_over_a_duplicate_version(store: EventStore) -> None:
    """The read check comes first (under the lock, before the insert): a command retried on
    fresh reads, not one refused as a conflict."""
    read, written = events(2), events(1)
    store.recorder.insert_events(read)
    store.recorder.insert_events(written)
    with pytest.raises(StaleRead):
        store.recorder.insert_events(
            events(1, oid=written[0].originator_id), reads={read[0].originator_id: 1}
        )


def test_an_event_larger_than_the_limit_refuses_the_whole_append(store: EventStore) -> None:
    oid = uuid4()
    small = StoredEvent(oid, 1, TOPIC, b"{}")
    big = StoredEvent(oid, 2, TOPIC, b'{"x": "' + b"y" * LIMIT + b'"}')
    with pytest.raises(EventTooLarge) as info:
        store.recorder.insert_events([small, big])
    assert (info.value.topic, info.value.size, info.value.limit) == (TOPIC, LIMIT + 9, LIMIT)
    assert isinstance(info.value, ValueError)
    assert versions(store, oid) == []  # the small one was not written either
    exactly = StoredEvent(oid, 1, TOPIC, b'{"x": "' + b"y" * (LIMIT - 9) + b'"}')
    assert len(exactly.state) == LIMIT
    store.recorder.insert_events([exactly])
    assert versions(store, oid) == [1]


def test_position_of_is_the_id_of_the_aggregates_latest_event(store: EventStore) -> None:
    oid = uuid4()
    assert store.recorder.position_of(oid) == 0  # type: ignore[attr-defined]
    assert store.position_of(oid) == 0
    first = store.recorder.insert_events(events(2, oid=oid))
    assert first is not None
    assert store.recorder.position_of(oid) == first[-1]  # type: ignore[attr-defined]
    others = store.recorder.insert_events(events(3))  # another aggregate's, later in the log
    assert others is not None and others[0] > first[-1]
    assert store.position_of(oid) == first[-1]
    mixed = store.recorder.insert_events([*events(1, 3, oid), *events(1)])
    assert mixed is not None
    assert store.position_of(oid) == mixed[0]


def test_concurrent_appends_get_distinct_ids_in_their_order(store: EventStore) -> None:
    barrier = threading.Barrier(8)

    def append(_: int) -> list[list[int]]:
        barrier.wait()
        written = []
        for _ in range(20):
            ids = store.recorder.insert_events(events(3))
            assert ids is not None
            written.append(list(ids))
        return written

    with ThreadPoolExecutor(8) as pool:
        appends = [ids for per_thread in pool.map(append, range(8)) for ids in per_thread]
    assert all(ids == sorted(ids) for ids in appends)
    every = [i for ids in appends for i in ids]
    assert len(set(every)) == len(every) == 8 * 20 * 3


def test_each_event_keeps_its_own_metadata(store: EventStore) -> None:
    ws = uuid4()
    by_user = Origin(user_actor(uuid4()), "req-1")
    by_key = Origin(api_key_actor(uuid4()), None)
    appended = events(3)
    metadata = [EventMetadata(by_user, ws), EventMetadata(by_user, ws), EventMetadata(by_key)]
    ids = store.recorder.insert_events(appended, metadata=metadata)
    assert ids is not None
    read = store.recorder.select_metadata(ids)  # type: ignore[attr-defined]
    assert [read[i] for i in ids] == metadata


def test_without_metadata_an_event_is_the_systems_in_no_workspace(store: EventStore) -> None:
    ids = store.recorder.insert_events(events(2))
    assert ids is not None
    read = store.recorder.select_metadata(ids)  # type: ignore[attr-defined]
    assert [read[i] for i in ids] == [EventMetadata(SYSTEM, None)] * 2


def test_metadata_of_another_length_writes_nothing(store: EventStore) -> None:
    last = store.recorder.max_notification_id()
    with pytest.raises(ValueError, match="metadata"):
        store.recorder.insert_events(events(2), metadata=[EventMetadata()])
    assert store.recorder.max_notification_id() == last
