"""The one-round-trip append (`infra.recorder`, migrations 008 to 010) on the real PostgreSQL:
what the relay relies on (a reader following the log never skips a committed event), atomicity,
duplicate versions refused with the library's IntegrityError, and read checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from domain.variables import WorkspaceVariables
from infra.eventstore import EventStore
from infra.recorder import EventTooLarge, LinkFlowRecorder, StaleRead
from infra.settings import Settings

TOPIC = "tests:Appended"


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[EventStore]:
    event_store = EventStore(settings)
    assert isinstance(event_store.recorder, LinkFlowRecorder)
    yield event_store
    event_store.close()


def events(count: int, first_version: int = 1) -> list[StoredEvent]:
    oid = uuid4()
    return [StoredEvent(oid, first_version + i, TOPIC, b'{"n": %d}' % i) for i in range(count)]


def test_ids_come_back_in_order_and_match_the_rows(store: EventStore, settings: Settings) -> None:
    appended = events(5)
    ids = store.recorder.insert_events(appended)
    assert ids == sorted(ids) and len(set(ids)) == 5
    with psycopg.connect(settings.conninfo) as conn:
        rows = conn.execute(
            "SELECT notification_id, originator_version, state FROM linkflow_events"
            " WHERE originator_id = %s ORDER BY originator_version",
            (appended[0].originator_id,),
        ).fetchall()
    assert [(r[0], r[1], bytes(r[2])) for r in rows] == [
        (i, e.originator_version, e.state) for i, e in zip(ids, appended, strict=True)
    ]


def test_a_duplicate_version_refuses_the_whole_append(
    store: EventStore, settings: Settings
) -> None:
    first = events(2)
    store.recorder.insert_events(first)
    oid = first[0].originator_id
    again = [StoredEvent(oid, 3, TOPIC, b"{}"), StoredEvent(oid, 2, TOPIC, b"{}")]
    with pytest.raises(IntegrityError):
        store.recorder.insert_events(again)
    with psycopg.connect(settings.conninfo) as conn:
        versions = conn.execute(
            "SELECT originator_version FROM linkflow_events WHERE originator_id = %s", (oid,)
        ).fetchall()
    assert sorted(v[0] for v in versions) == [1, 2]  # version 3 was not kept either


def test_a_reader_following_the_log_skips_no_committed_event(
    store: EventStore, settings: Settings
) -> None:
    """Like the relay: read what lies past the position, move the position to the last id read.
    With appends committing out of id order, a reader would move past an id still uncommitted
    and never see it; the table lock makes commits follow id order."""
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        start = conn.execute("SELECT coalesce(max(notification_id), 0) FROM linkflow_events")
        position = start.fetchone()[0]  # type: ignore[index]
    written: list[int] = []
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        nonlocal position
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            while True:
                finished = done.is_set()
                rows = conn.execute(
                    "SELECT notification_id FROM linkflow_events WHERE notification_id > %s"
                    " ORDER BY notification_id",
                    (position,),
                ).fetchall()
                if rows:
                    seen.extend(r[0] for r in rows)
                    position = rows[-1][0]
                elif finished:
                    return

    def append(_: int) -> None:
        for _ in range(40):
            written.extend(store.recorder.insert_events(events(3)))

    reader = threading.Thread(target=follow)
    reader.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(8)))
    done.set()
    reader.join(timeout=30)
    assert sorted(written) == seen


# ---------------------------------------------------------------- read checks (migration 009)


def _versions(settings: Settings, oid: object) -> list[int]:
    with psycopg.connect(settings.conninfo) as conn:
        rows = conn.execute(
            "SELECT originator_version FROM linkflow_events WHERE originator_id = %s", (oid,)
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_an_append_whose_read_is_current_is_written(store: EventStore, settings: Settings) -> None:
    read = events(2)
    store.recorder.insert_events(read)
    appended = events(1)
    never_written = uuid4()
    reads = {read[0].originator_id: 2, never_written: 0}  # 0: read as "does not exist"
    assert len(store.recorder.insert_events(appended, reads=reads)) == 1
    assert _versions(settings, appended[0].originator_id) == [1]


def test_an_append_whose_read_is_stale_writes_nothing_and_names_it(
    store: EventStore, settings: Settings
) -> None:
    read, created = events(3), events(1)
    store.recorder.insert_events(read)
    store.recorder.insert_events(created)
    current = events(1)
    store.recorder.insert_events(current)
    appended = events(2)
    reads = {
        read[0].originator_id: 2,  # version 3 came after it
        created[0].originator_id: 0,  # read as missing; it exists
        current[0].originator_id: 1,  # still current
    }
    with pytest.raises(StaleRead) as refused:
        store.recorder.insert_events(appended, reads=reads)
    assert set(refused.value.ids) == {read[0].originator_id, created[0].originator_id}
    assert _versions(settings, appended[0].originator_id) == []


def test_the_read_check_probes_the_index_after_the_log_grew(fresh_settings: Settings) -> None:
    """A session's first appends, on a nearly empty log, must not leave it a cached plan that
    scans the whole log (a hash semi-join over a sequential scan) once the log has grown."""
    plans: list[str] = []
    with psycopg.connect(fresh_settings.conninfo, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")  # the plans of the function's statements, as notices
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
        ):
            conn.execute(f"SET {setting}")
        written: list[StoredEvent] = []

        def append_reading_four() -> None:
            [event] = events(1)
            read = written[-4:]
            conn.execute(
                "SELECT linkflow_append_events(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    [event.originator_id],
                    [1],
                    [TOPIC],
                    [event.state],
                    [e.originator_id for e in read],
                    [1] * len(read),
                    [None],  # actor (migration 017): the system
                    [None],  # request id
                    [None],  # workspace
                ),
            )
            written.append(event)

        for _ in range(12):  # past the five custom plans, on a nearly empty log
            append_reading_four()
        conn.execute(
            "INSERT INTO linkflow_events (originator_id, originator_version, topic, state)"
            " SELECT gen_random_uuid(), 1, %s, '\\x7b7d' FROM generate_series(1, 20000)",
            (TOPIC,),
        )
        plans.clear()
        append_reading_four()
    [check] = [p for p in plans if "linkflow_events e" in p]
    assert "Index Only Scan using linkflow_events_pkey" in check, check
    assert "Seq Scan" not in check and "Hash" not in check, check


# ---------------------------------------------------------------- the size backstop


@pytest.fixture(scope="module")
def small_store(settings: Settings) -> Iterator[EventStore]:
    """An event store whose events may hold at most 1,000 bytes of state."""
    event_store = EventStore(settings.model_copy(update={"max_event_bytes": 1000}))
    yield event_store
    event_store.close()


def rows_of(settings: Settings, oid: object) -> int:
    with psycopg.connect(settings.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM linkflow_events WHERE originator_id = %s", (oid,)
        ).fetchone()
    return int(row[0])  # type: ignore[index]


def test_the_limit_comes_from_the_settings(store: EventStore, small_store: EventStore) -> None:
    assert isinstance(store.recorder, LinkFlowRecorder)
    assert isinstance(small_store.recorder, LinkFlowRecorder)
    assert store.recorder.max_event_bytes == Settings().max_event_bytes == 2 * 1024 * 1024
    assert small_store.recorder.max_event_bytes == 1000


def test_an_event_larger_than_the_limit_refuses_the_whole_append(
    small_store: EventStore, settings: Settings
) -> None:
    oid = uuid4()
    small = StoredEvent(oid, 1, TOPIC, b"{}")
    big = StoredEvent(oid, 2, TOPIC, b'{"x": "' + b"y" * 1000 + b'"}')
    with pytest.raises(EventTooLarge) as info:
        small_store.recorder.insert_events([small, big])
    assert (info.value.topic, info.value.size, info.value.limit) == (TOPIC, 1009, 1000)
    assert TOPIC in str(info.value) and "1009" in str(info.value) and "1000" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert rows_of(settings, oid) == 0  # the small one was not written either
    exactly = StoredEvent(oid, 1, TOPIC, b'{"x": "' + b"y" * 991 + b'"}')
    assert len(exactly.state) == 1000
    small_store.recorder.insert_events([exactly])
    assert rows_of(settings, oid) == 1


def test_a_save_through_the_store_is_refused_and_others_of_its_batch_are_written(
    small_store: EventStore, settings: Settings
) -> None:
    """Saves are group-committed: the save holding the large event fails alone."""
    at = datetime.now(UTC)
    big = WorkspaceVariables.create(str(uuid4()), at)
    big.set("blob", "z" * 2000, at)
    fine = [WorkspaceVariables.create(str(uuid4()), at) for _ in range(8)]

    def save(aggregate: WorkspaceVariables) -> object:
        try:
            return small_store.append(aggregate)
        except EventTooLarge as exc:
            return exc

    with ThreadPoolExecutor(9) as pool:
        results = list(pool.map(save, [big, *fine]))
    assert isinstance(results[0], EventTooLarge)
    assert "VariableSet" in str(results[0])
    assert all(isinstance(position, int) for position in results[1:])
    assert rows_of(settings, big.id) == 0
    assert all(rows_of(settings, aggregate.id) == 1 for aggregate in fine)
