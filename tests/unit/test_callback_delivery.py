"""Callback delivery, pure parts: the back-off schedule and the Execution's record of attempts
(idempotent by attempt number, only after the execution closed, nothing after the end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.execution import Execution
from engine.callbacks import backoff_s, retry_time
from infra.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(seconds=5)
DEFINITION = {
    "name": "one transform",
    "trigger": {"type": "manual"},
    "nodes": [{"id": "shape", "type": "transform", "config": {"set": {"n": 1}}}],
    "edges": [],
}


def closed(callback_url: str | None = "https://example.com/cb") -> Execution:
    """An execution that completed inline at start (its only node is a transform)."""
    ex = Execution.start(
        uuid4(), str(uuid4()), str(uuid4()), 1, DEFINITION, {}, T0, callback_url=callback_url
    )
    assert ex.status == "completed"
    ex.collect_events()
    return ex


def names(ex: Execution) -> list[str]:
    return [type(e).__name__ for e in ex.collect_events()]


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    assert [backoff_s(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_s(10_000, 0.5, 3600.0) == 3600.0  # no overflow for absurd attempt numbers


def test_retry_time_stops_after_the_last_allowed_attempt() -> None:
    settings = Settings(callback_max_attempts=3, callback_backoff_s=2.0)
    assert retry_time(1, T0, settings) == T0 + timedelta(seconds=2)
    assert retry_time(2, T0, settings) == T0 + timedelta(seconds=4)
    assert retry_time(3, T0, settings) is None


def test_failures_then_delivery_are_recorded_in_order() -> None:
    ex = closed()
    assert ex.record_callback_attempt(1, 500, None, LATER, T0)
    assert ex.record_callback_attempt(2, None, "connection refused", LATER, T0)
    assert ex.record_callback_attempt(3, 204, None, None, T0)
    assert names(ex) == ["CallbackFailed", "CallbackFailed", "CallbackDelivered"]
    assert (ex.callback_status, ex.callback_attempts) == ("delivered", 3)


@pytest.mark.parametrize("attempt", [1, 3])
def test_a_repeated_or_out_of_order_attempt_records_nothing(attempt: int) -> None:
    ex = closed()
    assert ex.record_callback_attempt(1, 503, None, LATER, T0)
    ex.collect_events()
    assert not ex.record_callback_attempt(attempt, 200, None, None, T0)
    assert names(ex) == []
    assert (ex.callback_status, ex.callback_attempts, ex.callback_next_attempt_at) == (
        "pending",
        1,
        LATER,
    )


def test_nothing_is_recorded_after_delivery() -> None:
    ex = closed()
    assert ex.record_callback_attempt(1, 200, None, None, T0)
    assert not ex.record_callback_attempt(2, 200, None, None, T0)
    assert names(ex) == ["CallbackDelivered"]


def test_a_failure_without_a_next_attempt_gives_up() -> None:
    ex = closed()
    assert ex.record_callback_attempt(1, 410, None, None, T0)
    assert names(ex) == ["CallbackFailed", "CallbackAbandoned"]
    assert ex.callback_status == "abandoned"
    assert not ex.record_callback_attempt(2, 200, None, None, T0)


def test_no_attempt_while_running_or_without_a_callback_url() -> None:
    running = Execution.start(
        uuid4(),
        str(uuid4()),
        str(uuid4()),
        1,
        DEFINITION | {"nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 5}}]},
        {},
        T0,
        callback_url="https://example.com/cb",
    )
    assert running.running
    assert not running.record_callback_attempt(1, 200, None, None, T0)
    assert not closed(callback_url=None).record_callback_attempt(1, 200, None, None, T0)


def test_the_delivery_state_survives_replay() -> None:
    ex = Execution.start(
        uuid4(), str(uuid4()), str(uuid4()), 1, DEFINITION, {}, T0, callback_url="http://x/cb"
    )
    ex.record_callback_attempt(1, 500, None, LATER, T0)
    replayed = None
    for event in ex.collect_events():
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Execution)
    assert (replayed.callback_status, replayed.callback_attempts) == ("pending", 1)
    assert replayed.callback_next_attempt_at == LATER
