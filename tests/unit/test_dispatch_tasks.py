"""engine.dispatch.tasks_of: which tasks a command's events leave to send (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from examples import load_example

from domain.definition import parse_definition
from domain.execution import Execution
from engine.dispatch import tasks_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def started(example: str) -> Execution:
    definition = parse_definition(load_example(example)).to_json()
    return Execution.start(
        uuid4(), str(uuid4()), str(uuid4()), 1, definition, {"base_url": "http://h"}, T0
    )


def test_a_start_leaves_its_entry_tasks() -> None:
    ex = started("fan-out-join.json")
    tasks = tasks_of(ex.collect_events())
    assert sorted((t.node_id, t.attempt) for t in tasks) == [("a", 1), ("b", 1)]
    assert {t.execution_id for t in tasks} == {ex.id}


def test_an_attempt_that_ended_in_the_same_events_is_not_sent() -> None:
    ex = started("fan-out-join.json")
    ex.complete_node("a", 1, {"body": {"price": 1}}, T0)
    assert [t.node_id for t in tasks_of(ex.collect_events())] == ["b"]


def test_a_closed_execution_sends_nothing() -> None:
    ex = started("fan-out-join.json")
    ex.cancel("no", T0)
    assert tasks_of(ex.collect_events()) == []
