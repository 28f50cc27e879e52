"""Concurrency limits and priority in the domain alone: the gate's decisions (slots, the line,
release, per key), a queued execution's admission and cancel, the settings' validation, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.concurrency import (
    ConcurrencyGate,
    ConcurrencyKeyError,
    ConcurrencySettings,
    gate_id,
    render_key,
)
from domain.definition import DefinitionInvalid, parse_definition
from domain.execution import Execution
from domain.expressions import ExpressionLimits

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = ExpressionLimits(10_000, 10_000)


def gate(key: str = "") -> ConcurrencyGate:
    return ConcurrencyGate.open(str(uuid4()), str(uuid4()), key, T0)


def replayed(g: ConcurrencyGate) -> ConcurrencyGate:
    events: list[Aggregate.Event] = list(g.collect_events())
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    return rebuilt  # type: ignore[no-any-return]


def test_limit_reached_queues_and_release_admits_the_oldest() -> None:
    g = gate()
    assert g.enter("a", 2, T0) and g.enter("b", 2, T0)
    assert not g.enter("c", 2, T0)
    assert not g.enter("d", 2, T0)
    assert g.holders == ["a", "b"] and g.waiting == ["c", "d"]
    assert g.admit_next(2, T0) is None  # no slot free
    assert g.leave("b", T0)
    assert g.admit_next(2, T0) == "c"
    assert g.admit_next(2, T0) is None
    assert g.holders == ["a", "c"] and g.waiting == ["d"]


def test_a_newcomer_does_not_overtake_the_line() -> None:
    g = gate()
    g.enter("a", 1, T0)
    g.enter("b", 1, T0)
    g.leave("a", T0)  # a slot is free, "b" waits: the newcomer lines up behind it
    assert not g.enter("c", 1, T0)
    assert g.admit_next(1, T0) == "b"


def test_repeats_change_nothing() -> None:
    g = gate()
    assert g.enter("a", 1, T0)
    assert not g.enter("b", 1, T0)
    before = len(g.pending_events)
    assert g.enter("a", 1, T0)  # still holds
    assert not g.enter("b", 1, T0)  # still waits
    assert g.leave("a", T0)
    assert not g.leave("a", T0)  # freed once
    assert len(g.pending_events) == before + 1


def test_a_canceled_waiter_leaves_the_line() -> None:
    g = gate()
    g.enter("a", 1, T0)
    g.enter("b", 1, T0)
    g.enter("c", 1, T0)
    assert g.leave("b", T0)  # b is canceled while it waits
    assert isinstance(g.pending_events[-1], ConcurrencyGate.WaitAbandoned)
    g.leave("a", T0)
    assert g.admit_next(1, T0) == "c"


def test_gates_are_per_workflow_and_key() -> None:
    wf = str(uuid4())
    assert gate_id(wf, "acme") == gate_id(wf, "acme")
    assert gate_id(wf, "acme") != gate_id(wf, "globex")
    assert gate_id(wf, "") != gate_id(str(uuid4()), "")


def test_the_gate_is_rebuilt_from_its_events() -> None:
    g = gate()
    for name in "abcd":
        g.enter(name, 2, T0)
    g.leave("a", T0)
    g.admit_next(2, T0)
    g.leave("d", T0)
    holders, waiting = list(g.holders), list(g.waiting)
    rebuilt = replayed(g)
    assert (rebuilt.holders, rebuilt.waiting) == (holders, waiting) == (["b", "c"], [])


def test_render_key() -> None:
    settings = ConcurrencySettings(limit=1, key="{{ trigger.customer }}")
    context = {"trigger": {"customer": "acme", "n": 7}}
    assert render_key(settings, context, LIMITS) == "acme"
    number = ConcurrencySettings(limit=1, key="{{ trigger.n }}")
    assert render_key(number, context, LIMITS) == "7"
    assert render_key(ConcurrencySettings(limit=3), context, LIMITS) == ""
    with pytest.raises(ConcurrencyKeyError, match="rendered to nothing"):
        render_key(settings, {"trigger": {}}, LIMITS)
    whole = ConcurrencySettings(limit=1, key="{{ trigger }}")
    with pytest.raises(ConcurrencyKeyError, match="string or a number"):
        render_key(whole, context, LIMITS)


def definition(**settings: Any) -> dict[str, Any]:
    return {
        "name": "gated",
        "trigger": {"type": "manual"},
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "config": {"method": "GET", "url": "http://h/x"},
            }
        ],
        "edges": [],
        "settings": settings,
    }


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"concurrency": {"limit": 0}}, "settings.concurrency.limit"),
        ({"concurrency": {"limit": 10_001}}, "settings.concurrency.limit"),
        ({"concurrency": {"limit": 1, "key": "plain"}}, "settings.concurrency.key"),
        ({"concurrency": {"limit": 1, "key": "{{ trigger. }}"}}, "settings.concurrency.key"),
        ({"concurrency": {"key": "{{ trigger.a }}"}}, "settings.concurrency.limit"),
        ({"priority": 0}, "settings.priority"),
        ({"priority": 6}, "settings.priority"),
    ],
)
def test_settings_are_validated(settings: dict[str, Any], path: str) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        parse_definition(definition(**settings))
    assert path in [p.path for p in caught.value.problems]


def test_valid_settings_are_kept() -> None:
    parsed = parse_definition(
        definition(concurrency={"limit": 5, "key": "{{ trigger.customer }}"}, priority=1)
    ).to_json()
    assert parsed["settings"] == {
        "concurrency": {"limit": 5, "key": "{{ trigger.customer }}"},
        "priority": 1,
    }


def start(queued: bool, **kwargs: Any) -> Execution:
    d = parse_definition(definition(concurrency={"limit": 1}, timeout_s=60)).to_json()
    return Execution.start(
        uuid4(), "ws", "wf", 1, d, {}, T0, concurrency_gate=uuid4(), queued=queued, **kwargs
    )


def names(execution: Execution) -> list[str]:
    return [type(e).__name__ for e in execution.pending_events]


def test_a_queued_execution_runs_nothing_until_admitted() -> None:
    ex = start(queued=True)
    assert ex.status == "queued"
    assert names(ex) == ["ExecutionStarted", "ExecutionQueued"]
    later = T0 + timedelta(seconds=30)
    assert ex.admit(later)
    assert not ex.admit(later)  # once
    assert ex.status == "running"
    assert names(ex)[2:] == ["ExecutionAdmitted", "TimerScheduled", "NodeScheduled"]
    [timer] = [e for e in ex.pending_events if isinstance(e, Execution.TimerScheduled)]
    assert timer.fire_at == later + timedelta(seconds=60)  # the timeout counts from admission


def test_a_queued_execution_can_be_canceled_and_is_not_admitted_after() -> None:
    ex = start(queued=True)
    assert ex.cancel("no longer needed", T0)
    assert ex.status == "canceled"
    assert not ex.admit(T0)


def test_a_refused_start_fails_at_once() -> None:
    d = parse_definition(definition()).to_json()
    error = {"type": "concurrency_key_error", "message": "rendered to nothing"}
    ex = Execution.start(uuid4(), "ws", "wf", 1, d, {}, T0, refused=error)
    assert ex.status == "failed" and ex.error == error
    assert names(ex) == ["ExecutionStarted", "ExecutionFailed"]


def test_priority_goes_into_tasks_and_survives_replay() -> None:
    d = parse_definition(definition(priority=5)).to_json()
    by_setting = Execution.start(uuid4(), "ws", "wf", 1, d, {}, T0)
    overridden = Execution.start(uuid4(), "ws", "wf", 1, d, {}, T0, priority=1)
    default = Execution.start(
        uuid4(), "ws", "wf", 1, parse_definition(definition()).to_json(), {}, T0
    )

    def task_of(ex: Execution) -> dict[str, Any]:
        [e] = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
        assert e.task is not None
        return e.task

    assert task_of(by_setting)["priority"] == 5
    assert task_of(overridden)["priority"] == 1
    assert "priority" not in task_of(default)  # the default costs the task nothing
    rebuilt: Any = None
    for event in overridden.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert rebuilt.priority == 1


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 3),
    steps=st.lists(st.tuples(st.sampled_from(["start", "complete", "cancel"]), st.integers(0, 99))),
)
def test_a_gate_never_exceeds_its_limit_and_admits_in_order(
    limit: int, steps: list[tuple[str, int]]
) -> None:
    """Random starts, completions and cancels (of running or queued executions), decided as
    the commands decide them (commands.concurrency): at most `limit` run, nobody waits while a
    slot is free, the line is served in order, each execution is admitted once, and the gate
    replays to the same state."""
    d = parse_definition(definition(concurrency={"limit": limit})).to_json()
    g = gate()
    executions: list[Execution] = []
    admitted: list[str] = []  # admitted from the line, in order
    now = T0
    for kind, pick in steps:
        now += timedelta(seconds=1)
        if kind == "start":
            execution_id = uuid4()
            queued = not g.enter(str(execution_id), limit, now)
            executions.append(
                Execution.start(
                    execution_id, "ws", "wf", 1, d, {}, now, concurrency_gate=g.id, queued=queued
                )
            )
            continue
        open_ = [e for e in executions if e.status in ("running", "queued")]
        if not open_:
            continue
        ex = open_[pick % len(open_)]
        if kind == "complete" and ex.status == "running":
            assert ex.complete_node("call", 1, {"ok": True}, now)
        else:
            assert ex.cancel("by test", now)
        assert g.leave(str(ex.id), now)
        while (next_id := g.admit_next(limit, now)) is not None:
            [waiting] = [e for e in executions if str(e.id) == next_id]
            assert waiting.admit(now)
            admitted.append(next_id)
        running = [e for e in executions if e.status == "running"]
        queued_ = [e for e in executions if e.status == "queued"]
        assert len(running) <= limit
        assert not queued_ or len(running) == limit
        assert sorted(g.holders) == sorted(str(e.id) for e in running)
        assert g.waiting == [str(e.id) for e in queued_]  # in start order
    assert len(admitted) == len(set(admitted))
    starts = [str(e.id) for e in executions]
    assert admitted == sorted(admitted, key=starts.index)  # first come, first served
    rebuilt = replayed(g)
    assert (rebuilt.holders, rebuilt.waiting) == (g.holders, g.waiting)
