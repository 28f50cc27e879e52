"""The recorder contract (tests/recorder_contract.py) run on both recorders: the in-memory one
the unit tests use (`infra.memory_recorder`) and the PostgreSQL one processes use
(`infra.recorder`, on this run's own test database), so the unit tests' recorder is held to
what PostgreSQL does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from recorder_contract import *  # noqa: F403 - the contract's tests, run here on both recorders
from recorder_contract import LIMIT

from infra.eventstore import EventStore
from infra.memory_recorder import MemoryRecorder
from infra.recorder import LinkFlowRecorder
from infra.settings import Settings


@pytest.fixture(scope="module", params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    memory = request.param == "memory"
    # Only the PostgreSQL parameter asks for the suite's database (tests/conftest.py).
    settings: Settings = Settings() if memory else request.getfixturevalue("settings")
    event_store = EventStore(settings.model_copy(update={"max_event_bytes": LIMIT}), memory=memory)
    assert isinstance(event_store.recorder, MemoryRecorder if memory else LinkFlowRecorder)
    yield event_store
    event_store.close()
