"""The Execution aggregate alone: branching, skipping, joins, retries, timeouts, cancel, replay."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from examples import load_example

from domain.definition import parse_definition
from domain.execution import Execution
from domain.limits import DEFAULT_LIMITS, Limits

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def start(name: str, input: Any, at: datetime = T0) -> Execution:
    definition = parse_definition(load_example(name)).to_json()
    return Execution.start(uuid4(), str(uuid4()), str(uuid4()), 1, definition, input, at)


def statuses(execution: Execution) -> dict[str, str]:
    return {node_id: run.status for node_id, run in execution.nodes.items()}


def events_of(execution: Execution) -> list[str]:
    return [type(e).__name__ for e in execution.pending_events]


def only_timer(execution: Execution, kind: str) -> str:
    [timer] = [t for t, spec in execution.timers.items() if spec["kind"] == kind]
    return timer


def order_body(order_id: int) -> dict[str, Any]:
    status = "paid" if order_id % 2 == 0 else "pending"
    return {"status_code": 200, "body": {"id": order_id, "status": status, "total": order_id * 10}}


def test_start_schedules_entry_nodes_with_rendered_config() -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 42})
    assert events_of(ex)[:2] == ["ExecutionStarted", "TimerScheduled"]
    scheduled = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert [e.node_id for e in scheduled] == ["fetch"]
    task = scheduled[0].task
    assert task is not None
    assert (task["type"], task["timeout_s"]) == ("http_request", 10.0)
    assert task["config"]["url"] == "http://h/orders/42"
    assert statuses(ex)["fetch"] == "scheduled"


def test_paid_order_takes_the_yes_branch_waits_and_skips_unpaid() -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 42})
    assert ex.complete_node("fetch", 1, order_body(42), T0 + timedelta(seconds=1))
    assert statuses(ex)["paid"] == "completed"
    assert statuses(ex)["unpaid"] == "skipped"
    assert statuses(ex)["wait"] == "scheduled"
    delay = only_timer(ex, "delay")
    assert ex.fire_timer(delay, T0 + timedelta(seconds=2))
    assert ex.status == "completed"
    assert ex.output == {"order": 42, "total": 420}


def test_unpaid_order_skips_wait_and_shape() -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 7})
    ex.complete_node("fetch", 1, order_body(7), T0)
    assert ex.status == "completed"
    assert statuses(ex)["wait"] == "skipped" and statuses(ex)["shape"] == "skipped"
    assert ex.output == {"reason": "unpaid", "order": 7}


def test_export_format_behaves_like_the_native_one() -> None:
    ex = start("linkflow-export.json", {"base_url": "http://h", "order_id": 42})
    ex.complete_node("fetch", 1, order_body(42), T0)
    ex.fire_timer(only_timer(ex, "delay"), T0 + timedelta(seconds=1))
    assert ex.status == "completed"
    assert ex.output == {"order": 42, "total": 420}
    assert statuses(ex)["unpaid"] == "skipped"


def test_failed_attempts_retry_through_timers_with_backoff() -> None:
    ex = start("retry-then-succeed.json", {"base_url": "http://h", "key": "k"})
    error = {"type": "http_status", "message": "HTTP 500"}
    assert ex.fail_node("call", 1, error, T0)
    retry = ex.timers[only_timer(ex, "retry")]
    assert retry["attempt"] == 2
    fire_at = [e for e in ex.pending_events if isinstance(e, Execution.TimerScheduled)][-1].fire_at
    assert fire_at == T0 + timedelta(seconds=0.2)
    assert ex.fire_timer(only_timer(ex, "retry"), fire_at)
    assert ex.nodes["call"].attempts == 2
    ex.fail_node("call", 2, error, fire_at)
    second = [e for e in ex.pending_events if isinstance(e, Execution.TimerScheduled)][-1]
    assert second.fire_at == fire_at + timedelta(seconds=0.4)
    ex.fire_timer(second.timer_id, second.fire_at)
    ex.complete_node("call", 3, {"body": {"ok": True, "key": "k"}}, second.fire_at)
    assert ex.status == "completed"
    assert ex.output == {"ok": True, "key": "k"}
    assert ex.nodes["call"].attempts == 3


def test_exhausted_retries_fail_the_execution() -> None:
    ex = start("timeout.json", {"base_url": "http://h"})
    assert ex.fail_node("slow", 1, {"type": "connection_error", "message": "x"}, T0)
    assert ex.status == "failed"
    assert ex.error is not None and ex.error["node_id"] == "slow"


def test_join_waits_for_every_parent() -> None:
    ex = start("fan-out-join.json", {"base_url": "http://h"})
    assert statuses(ex) == {"a": "scheduled", "b": "scheduled", "sum": "pending"}
    ex.complete_node("a", 1, {"body": {"sku": "abc", "price": 3}}, T0)
    assert statuses(ex)["sum"] == "pending"
    ex.complete_node("b", 1, {"body": {"sku": "abcdef", "price": 6}}, T0)
    assert ex.status == "completed"
    assert ex.output == {"total": 9}


def test_continue_on_error_skips_descendants_and_completes() -> None:
    ex = start("continue-on-error.json", {"base_url": "http://h"})
    assert statuses(ex)["side"] == "completed"
    ex.fail_node("lookup", 1, {"type": "http_status", "message": "HTTP 404"}, T0)
    assert statuses(ex) == {"lookup": "failed", "use": "skipped", "side": "completed"}
    assert ex.status == "completed"
    assert ex.output == {"side": "done"}


def test_node_timeout_ends_the_attempt_as_timed_out() -> None:
    ex = start("timeout.json", {"base_url": "http://h"})
    assert ex.time_out_node("slow", 1, T0 + timedelta(seconds=1))
    assert statuses(ex)["slow"] == "timed_out"
    assert ex.status == "failed"
    assert ex.nodes["slow"].error == {"type": "timeout", "message": "attempt 1 timed out"}
    late = ex.complete_node("slow", 1, {"status_code": 200}, T0 + timedelta(seconds=5))
    assert late is False


def test_waiting_for_a_worker_does_not_count_against_the_node_timeout() -> None:
    """Issue 12, defect 1: `timeout_s` was a timer started when the node was scheduled, so an
    attempt that waited in a busy queue timed out (and was retried) before any worker ran it.
    It is start-to-close now: nothing times out an attempt no worker has started."""
    ex = start("timeout.json", {"base_url": "http://h"})
    assert "node_timeout" not in {spec["kind"] for spec in ex.timers.values()}
    events = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert events[0].task is not None and events[0].task["timeout_s"] == 1


def _with_schedule_to_start(timeout_s: float | None = 10) -> Execution:
    definition = {
        "name": "queue-bound",
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "config": {"url": "http://h/x"},
                "schedule_to_start_s": 5,
                "retry": {"max_attempts": 3},
                **({"timeout_s": timeout_s} if timeout_s else {}),
            }
        ],
    }
    parsed = parse_definition(definition).to_json()
    return Execution.start(uuid4(), "ws", "wf", 1, parsed, {}, T0)


def test_an_attempt_no_worker_started_in_time_times_out_without_a_retry() -> None:
    ex = _with_schedule_to_start()
    [task] = [e.task for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert task is not None and task["schedule_to_start_s"] == 5
    assert ex.fire_timer(only_timer(ex, "schedule_to_start"), T0 + timedelta(seconds=5))
    assert statuses(ex)["call"] == "timed_out"
    assert ex.nodes["call"].error == {
        "type": "schedule_to_start_timeout",
        "message": "attempt 1 was not started in time",
    }
    assert ex.status == "failed"  # another attempt would wait in the same queue: no retry
    assert not ex.start_node("call", 1, T0 + timedelta(seconds=6))  # the worker does not run it


def test_a_started_attempt_has_a_durable_start_to_close_timeout() -> None:
    ex = _with_schedule_to_start()
    schedule_to_start = only_timer(ex, "schedule_to_start")
    assert ex.start_node("call", 1, T0 + timedelta(seconds=2))
    assert statuses(ex)["call"] == "running"
    assert not ex.start_node("call", 1, T0 + timedelta(seconds=2))  # once
    assert not ex.fire_timer(schedule_to_start, T0 + timedelta(seconds=5))  # started in time
    # The worker died: the durable timeout ends the attempt 10 s after its start, and the
    # retry policy applies.
    assert ex.fire_timer(only_timer(ex, "node_timeout"), T0 + timedelta(seconds=12))
    assert statuses(ex)["call"] == "retrying"
    assert ex.fire_timer(only_timer(ex, "retry"), T0 + timedelta(seconds=13))
    assert (statuses(ex)["call"], ex.nodes["call"].attempts) == ("scheduled", 2)
    assert ex.complete_node("call", 2, {"status_code": 200}, T0 + timedelta(seconds=14))
    assert ex.status == "completed"


def test_execution_timeout_cancels_running_nodes() -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 42})
    assert ex.fire_timer(only_timer(ex, "execution_timeout"), T0 + timedelta(seconds=60))
    assert ex.status == "timed_out"
    assert statuses(ex)["fetch"] == "canceled"


def test_repeated_and_stale_results_are_ignored() -> None:
    ex = start("fan-out-join.json", {"base_url": "http://h"})
    assert ex.complete_node("a", 1, {"body": {"price": 3}}, T0)
    count = len(ex.pending_events)
    assert not ex.complete_node("a", 1, {"body": {"price": 3}}, T0)
    assert not ex.complete_node("b", 2, {"body": {"price": 6}}, T0)
    assert not ex.fail_node("a", 1, {"type": "x", "message": "late"}, T0)
    assert not ex.fire_timer("no-such-timer", T0)
    assert len(ex.pending_events) == count


def test_cancel_stops_everything_once() -> None:
    ex = start("fan-out-join.json", {"base_url": "http://h"})
    assert ex.cancel("user asked", T0)
    assert ex.status == "canceled"
    assert statuses(ex) == {"a": "canceled", "b": "canceled", "sum": "pending"}
    assert not ex.cancel("again", T0)
    assert not ex.complete_node("a", 1, {}, T0)


def test_bad_expression_at_run_time_fails_the_node_without_retry() -> None:
    definition = parse_definition(
        {
            "name": "bad",
            "nodes": [
                {
                    "id": "t",
                    "type": "transform",
                    "config": {"set": {"x": "{{ sum(trigger.words) }}"}},
                }
            ],
        }
    ).to_json()
    ex = Execution.start(uuid4(), "ws", "wf", 1, definition, {"words": ["a", "b"]}, T0)
    assert ex.status == "failed"
    assert ex.nodes["t"].error is not None
    assert ex.nodes["t"].error["type"] == "expression_error"


@pytest.mark.parametrize("order_id", [42, 7])
def test_replay_rebuilds_the_same_state(order_id: int) -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": order_id})
    ex.complete_node("fetch", 1, order_body(order_id), T0 + timedelta(seconds=1))
    if ex.running:
        ex.fire_timer(only_timer(ex, "delay"), T0 + timedelta(seconds=2))
    events = ex.collect_events()
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert rebuilt is not None
    assert rebuilt.status == ex.status
    assert rebuilt.output == ex.output
    assert statuses(rebuilt) == statuses(ex)
    assert rebuilt.version == ex.version
    assert rebuilt.nodes == ex.nodes


def test_a_node_timeout_after_its_attempt_completed_is_ignored_while_running() -> None:
    ex = _with_schedule_to_start()
    assert ex.start_node("call", 1, T0)
    timeout = only_timer(ex, "node_timeout")
    ex.complete_node("call", 1, {"status_code": 200}, T0)
    ex.collect_events()
    assert not ex.fire_timer(timeout, T0 + timedelta(seconds=10))
    assert not ex.time_out_node("call", 1, T0 + timedelta(seconds=10))
    assert ex.collect_events() == []


def test_a_copy_for_a_command_leaves_the_original_as_it_was() -> None:
    """The event store copies a cached Execution for each command (Execution.__deepcopy__
    shares what never changes): the command's changes must not reach the cached original."""
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 42})
    ex.collect_events()  # as cached: saved, nothing pending
    before = (statuses(ex), dict(ex.timers), ex.version, ex.status)
    command = copy.deepcopy(ex)
    assert command.definition is ex.definition  # shared, not copied
    assert command.complete_node("fetch", 1, order_body(42), T0 + timedelta(seconds=1))
    assert only_timer(command, "delay") not in ex.timers  # scheduled on the copy only
    assert (statuses(ex), dict(ex.timers), ex.version, ex.status) == before
    assert command.fire_timer(only_timer(command, "delay"), T0 + timedelta(seconds=2))
    assert statuses(command) != statuses(ex)
    assert (statuses(ex), dict(ex.timers), ex.version, ex.status) == before
    assert ex.pending_events == []
    assert ex.nodes["fetch"].output is None


def test_a_copy_continues_exactly_like_the_original() -> None:
    ex = start("order-followup.json", {"base_url": "http://h", "order_id": 42})
    ex.collect_events()
    command = copy.deepcopy(ex)
    for e in (ex, command):
        e.complete_node("fetch", 1, order_body(42), T0 + timedelta(seconds=1))
        e.fire_timer(only_timer(e, "delay"), T0 + timedelta(seconds=2))
    assert statuses(command) == statuses(ex)
    assert (command.version, command.status, command.output) == (ex.version, ex.status, ex.output)
    assert events_of(command) == events_of(ex)


def _chain(nodes: int, reversed_order: bool = False) -> dict[str, Any]:
    ids = [f"n{i}" for i in range(nodes)]
    listed = list(reversed(ids)) if reversed_order else ids
    return parse_definition(
        {
            "name": "chain",
            "nodes": [{"id": i, "type": "transform", "config": {"set": {"v": i}}} for i in listed],
            "edges": [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)],
        },
        max_nodes=nodes,
    ).to_json()


@pytest.mark.parametrize("reversed_order", [False, True])
def test_deciding_a_graph_looks_at_each_node_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch, reversed_order: bool
) -> None:
    """Defect 3 of issue 12: starting a 10,000-node workflow cost ~170x a 1,000-node one (every
    advance rescanned every node). Now a node's readiness is looked at once per parent that
    settles, whatever the graph's size or the order its nodes are listed in."""
    looks = 0
    readiness = Execution._readiness

    def counted(self: Execution, node_id: str) -> str:
        nonlocal looks
        looks += 1
        return readiness(self, node_id)

    monkeypatch.setattr(Execution, "_readiness", counted)
    nodes = 3_000
    ex = Execution.start(uuid4(), "ws", "wf", 1, _chain(nodes, reversed_order), {}, T0)
    assert ex.status == "completed"
    assert set(statuses(ex).values()) == {"completed"}
    assert looks <= 2 * nodes
    assert ex.output == {"v": f"n{nodes - 1}"}


def _one_transform(set_: dict[str, Any], limits: Limits) -> Execution:
    definition = parse_definition(
        {"name": "t", "nodes": [{"id": "t", "type": "transform", "config": {"set": set_}}]}
    ).to_json()
    return Execution.start(uuid4(), "ws", "wf", 1, definition, {"s": "x" * 100}, T0, limits=limits)


def test_the_amplifying_expression_of_issue_12_fails_its_node_and_records_little() -> None:
    """A ~200-byte request whose transform repeated a string with `[@,@,…]` seven times wrote
    two 132 MB events. Now the expression's result is bounded: the node fails, the events are
    small."""
    amplify = " | ".join(["trigger.s"] + ["[@,@,@,@,@,@,@,@,@,@]"] * 7)
    ex = _one_transform({"big": "{{ " + amplify + " }}"}, DEFAULT_LIMITS)
    assert ex.status == "failed"
    assert ex.nodes["t"].error is not None
    assert ex.nodes["t"].error["type"] in ("expression_too_large", "expression_too_costly")
    assert sum(len(repr(e.__dict__)) for e in ex.pending_events) < 10_000


def test_a_transform_building_past_the_limit_fails_the_node() -> None:
    limits = Limits(max_output_bytes=1000, max_expression_result_bytes=10_000)
    many = {f"k{i}": "{{ trigger.s }}" for i in range(20)}  # 20 x 100 characters
    ex = _one_transform(many, limits)
    assert ex.status == "failed"
    assert ex.nodes["t"].error == {
        "type": "config_too_large",
        "message": "the rendered config exceeds 1000 bytes",
    }
    assert _one_transform({"k": "{{ trigger.s }}"}, limits).status == "completed"


def test_a_rendered_config_past_the_limit_fails_the_node() -> None:
    definition = parse_definition(
        {
            "name": "call",
            "nodes": [
                {
                    "id": "call",
                    "type": "http_request",
                    "config": {
                        "url": "http://h",
                        "headers": {f"h{i}": "{{ trigger.s }}" for i in range(20)},
                    },
                }
            ],
        }
    ).to_json()
    limits = Limits(max_output_bytes=1000)
    ex = Execution.start(uuid4(), "ws", "wf", 1, definition, {"s": "x" * 100}, T0, limits=limits)
    assert (ex.status, ex.nodes["call"].error["type"]) == ("failed", "config_too_large")  # type: ignore[index]
    [scheduled] = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert scheduled.task is None  # nothing of it was recorded


def test_leaves_whose_outputs_together_pass_the_limit_fail_the_execution() -> None:
    definition = parse_definition(
        {
            "name": "two leaves",
            "nodes": [
                {"id": "a", "type": "transform", "config": {"set": {"v": "{{ trigger.s }}"}}},
                {"id": "b", "type": "transform", "config": {"set": {"v": "{{ trigger.s }}"}}},
            ],
        }
    ).to_json()
    limits = Limits(max_output_bytes=150)
    ex = Execution.start(uuid4(), "ws", "wf", 1, definition, {"s": "x" * 100}, T0, limits=limits)
    assert statuses(ex) == {"a": "completed", "b": "completed"}
    assert ex.status == "failed"
    assert ex.error == {
        "type": "output_too_large",
        "message": "the leaves' outputs together exceed 150 bytes",
    }
