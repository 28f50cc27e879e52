"""The in-memory recorder (`infra.memory_recorder`) holds to the recorder contract
(tests/recorder_contract.py, run on PostgreSQL too by tests/integration/test_recorder_contract.py),
and `EventStore(settings, memory=True)` is built on it without PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from recorder_contract import *  # noqa: F403 - the contract's tests, run here in memory
from recorder_contract import LIMIT

from domain.workspace import Workspace
from infra.eventstore import EventStore
from infra.memory_recorder import MemoryRecorder
from infra.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NOWHERE = Settings(pg_host="192.0.2.1", pg_port=1)  # no PostgreSQL may be asked anything


@pytest.fixture
def store() -> Iterator[EventStore]:
    event_store = EventStore(NOWHERE.model_copy(update={"max_event_bytes": LIMIT}), memory=True)
    yield event_store
    event_store.close()


def test_a_memory_store_is_built_without_postgresql() -> None:
    store = EventStore(NOWHERE, memory=True)
    try:
        assert isinstance(store.recorder, MemoryRecorder)
        assert store.recorder.max_event_bytes == NOWHERE.max_event_bytes
        ws = Workspace.create(uuid4(), "w", "owner", NOW)
        position = store.append(ws)
        assert position == store.position_of(ws.id) == 1
        assert store.copy_fresh(Workspace, ws.id).name == "w"
    finally:
        store.close()


def test_each_memory_store_has_a_log_of_its_own() -> None:
    one, two = EventStore(NOWHERE, memory=True), EventStore(NOWHERE, memory=True)
    try:
        ws = Workspace.create(uuid4(), "w", "owner", NOW)
        one.append(ws)
        assert two.position_of(ws.id) == 0
        assert two.recorder.max_notification_id() is None
    finally:
        one.close()
        two.close()
