"""The status and kind enums (domain.statuses) are today's strings: events are stored with the
plain strings, what is decoded back (plain `str`) still drives the Execution, and every reader
of a closing event shows the status and error the Execution has."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.definition import parse_definition
from domain.execution import CLOSED_STATUS, Execution
from domain.statuses import CallbackStatus, ExecutionStatus, NodeStatus, NodeTimeout, TimerKind
from engine.callbacks import final_result
from projections.execution_rows import fold

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITION = {
    "name": "queue-bound",
    "settings": {"timeout_s": 60},
    "nodes": [
        {
            "id": "call",
            "type": "http_request",
            "config": {"url": "http://h/x"},
            "schedule_to_start_s": 5,
            "timeout_s": 10,
            "retry": {"max_attempts": 3},
        }
    ],
}


def started() -> Execution:
    definition = parse_definition(DEFINITION).to_json()
    return Execution.start(uuid4(), "ws", "wf", 1, definition, {}, T0)


def stored(app: Application, ex: Execution) -> list[StoredEvent]:
    return [app.mapper.to_stored_event(e) for e in ex.collect_events()]


def replayed(app: Application, events: list[StoredEvent]) -> Execution:
    execution: Any = None
    for event in events:
        execution = app.mapper.to_domain_event(event).mutate(execution)
    assert isinstance(execution, Execution)
    return execution


def timer_of(ex: Execution, kind: str) -> str:
    [timer] = [t for t, spec in ex.timers.items() if spec["kind"] == kind]
    return timer


def test_the_values_are_the_strings_of_the_api_the_events_and_the_read_models() -> None:
    assert list(ExecutionStatus) == [
        "running",
        "completed",
        "failed",
        "canceled",
        "timed_out",
        "queued",
    ]
    assert list(NodeStatus) == [
        "pending",
        "scheduled",
        "running",
        "retrying",
        "completed",
        "failed",
        "skipped",
        "canceled",
        "timed_out",
    ]
    assert list(CallbackStatus) == ["pending", "delivered", "abandoned"]
    assert list(TimerKind) == [
        "execution_timeout",
        "delay",
        "retry",
        "schedule_to_start",
        "node_timeout",
        "wait_timeout",
    ]
    assert list(NodeTimeout) == ["start_to_close", "schedule_to_start"]
    assert f"{ExecutionStatus.TIMED_OUT}" == str(ExecutionStatus.TIMED_OUT) == "timed_out"
    assert json.dumps({"status": NodeStatus.RETRYING}) == '{"status": "retrying"}'


def test_stored_events_hold_plain_strings_and_the_decoded_ones_still_decide() -> None:
    app = Application()  # in memory, with the event store's JSON transcoder
    ex = started()
    first = stored(app, ex)
    kinds = [json.loads(e.state)["kind"] for e in first if e.topic.endswith("TimerScheduled")]
    assert kinds == ["execution_timeout", "schedule_to_start"]

    rebuilt = replayed(app, first)
    assert {type(spec["kind"]) for spec in rebuilt.timers.values()} == {str}
    assert rebuilt.status == ExecutionStatus.RUNNING
    assert rebuilt.nodes["call"].status == NodeStatus.SCHEDULED
    schedule_to_start = timer_of(rebuilt, "schedule_to_start")
    assert rebuilt.start_node("call", 1, T0 + timedelta(seconds=2))
    assert not rebuilt.fire_timer(schedule_to_start, T0 + timedelta(seconds=5))  # started
    assert rebuilt.fire_timer(timer_of(rebuilt, "node_timeout"), T0 + timedelta(seconds=12))
    assert rebuilt.nodes["call"].status == NodeStatus.RETRYING
    second = stored(app, rebuilt)
    states = [json.loads(e.state) for e in second]
    assert [s["kind"] for s in states if "kind" in s] == ["node_timeout", "retry"]
    assert [s["timeout"] for s in states if "timeout" in s] == ["start_to_close"]

    again = replayed(app, first + second)
    assert again.fire_timer(timer_of(again, "retry"), T0 + timedelta(seconds=13))
    assert (again.nodes["call"].status, again.nodes["call"].attempts) == ("scheduled", 2)


def _close_row(event: Any) -> dict[str, Any]:
    """The columns the read model's fold sets on the execution's row for a closing event."""
    [statement] = fold([event])
    [values] = statement.rows
    return dict(zip(statement.columns, values, strict=True))


@pytest.mark.parametrize(
    ("close", "status"),
    [
        ("cancel", "canceled"),
        ("time_out", "timed_out"),
        ("fail", "failed"),
        ("complete", "completed"),
    ],
)
def test_every_reader_of_a_closing_event_shows_the_executions_status_and_error(
    close: str, status: str
) -> None:
    ex = started()
    later = T0 + timedelta(seconds=1)
    if close == "cancel":
        assert ex.cancel("no longer wanted", later)
    elif close == "time_out":
        assert ex.fire_timer(timer_of(ex, "execution_timeout"), later)
    elif close == "fail":
        assert ex.fail_node("call", 1, {"type": "http_error", "message": "500"}, later, False)
    else:
        assert ex.complete_node("call", 1, {"status_code": 200}, later)
    event = ex.collect_events()[-1]
    assert ex.status == CLOSED_STATUS[type(event)] == status
    assert (ex.error is None) == (status == "completed")
    result = final_result(event)
    assert (result["status"], result["error"]) == (status, ex.error)
    row = _close_row(event)
    error = row["error"].obj if row["error"] is not None else None
    assert (row["status"], error) == (status, ex.error)
