"""Signals, `wait_for_signal` and `approval` nodes in the Execution aggregate alone (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from examples import load_example

from domain.base import DomainError
from domain.definition import DefinitionInvalid, parse_definition
from domain.execution import Execution
from domain.limits import Limits
from domain.waits import MAX_KEPT_SIGNALS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = {"type": "user", "id": "alice"}
BOB = {"type": "user", "id": "bob"}


def start(
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]] | None = None,
    started_by: dict[str, Any] | None = ALICE,
) -> Execution:
    raw = {"name": "w", "trigger": {"type": "manual"}, "nodes": nodes, "edges": edges or []}
    definition = parse_definition(raw).to_json()
    return Execution.start(
        uuid4(), str(uuid4()), str(uuid4()), 1, definition, {}, T0, started_by=started_by
    )


def wait(node_id: str, signal: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "wait_for_signal", "config": {"signal": signal, **config}}


def done(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "transform", "config": {"set": {"done": node_id}}}


def approval(node_id: str = "ok", **config: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "approval",
        "config": {"approvers": {"roles": ["admin", "owner"]}, **config},
    }


def replayed(ex: Execution) -> Execution:
    rebuilt: Any = None
    for event in ex.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Execution)
    return rebuilt


def only_timer(ex: Execution, kind: str) -> str:
    [timer] = [t for t, spec in ex.timers.items() if spec["kind"] == kind]
    return timer


def test_a_waiting_node_is_running_and_a_signal_completes_it() -> None:
    ex = start([wait("w", "go"), done("after")], [{"source": "w", "target": "after"}])
    assert ex.nodes["w"].status == "running"
    assert ex.receive_signal("go", {"n": 1}, BOB, None, T0 + timedelta(seconds=1))
    assert ex.status == "completed"
    assert ex.nodes["w"].output == {
        "branch": "received",
        "signal": "go",
        "payload": {"n": 1},
        "actor": BOB,
        "received_at": (T0 + timedelta(seconds=1)).isoformat(),
    }
    assert ex.inbox == {"go": []}
    rebuilt = replayed(ex)
    assert rebuilt.nodes == ex.nodes and rebuilt.inbox == ex.inbox


def test_a_signal_before_the_node_waits_is_kept_then_delivered() -> None:
    nodes = [approval("first"), wait("w", "go")]
    ex = start(nodes, [{"source": "first", "target": "w"}])
    assert ex.receive_signal("go", "early", BOB, None, T0)
    assert ex.nodes["w"].status == "pending"
    assert [s["payload"] for s in ex.inbox["go"]] == ["early"]
    ex.decide_approval("first", "approve", None, BOB, "admin", T0 + timedelta(seconds=1))
    assert ex.status == "completed"
    assert ex.nodes["w"].output["payload"] == "early"
    assert ex.inbox["go"] == []
    assert replayed(ex).nodes == ex.nodes


def test_signals_go_in_order_to_the_node_that_waited_first() -> None:
    # `b` waits from the start; `a` only once `gate` is approved: `b` waited first.
    nodes = [approval("gate"), wait("a", "go"), wait("b", "go")]
    ex = start(nodes, [{"source": "gate", "target": "a"}])
    ex.decide_approval("gate", "approve", None, BOB, "admin", T0 + timedelta(seconds=1))
    assert ex.nodes["a"].status == ex.nodes["b"].status == "running"
    ex.receive_signal("go", 1, BOB, None, T0 + timedelta(seconds=2))
    assert (ex.nodes["a"].status, ex.nodes["b"].output["payload"]) == ("running", 1)
    ex.receive_signal("go", 2, BOB, None, T0 + timedelta(seconds=3))
    assert ex.nodes["a"].output["payload"] == 2
    assert ex.status == "completed"


def test_kept_signals_are_taken_oldest_first() -> None:
    nodes = [approval("gate"), wait("a", "go"), wait("b", "go")]
    ex = start(nodes, [{"source": "gate", "target": "a"}, {"source": "a", "target": "b"}])
    ex.receive_signal("go", 1, BOB, None, T0)
    ex.receive_signal("go", 2, BOB, None, T0)
    ex.decide_approval("gate", "approve", None, BOB, "admin", T0)
    assert (ex.nodes["a"].output["payload"], ex.nodes["b"].output["payload"]) == (1, 2)
    assert ex.status == "completed"


def test_a_repeated_idempotency_key_is_ignored_even_once_closed() -> None:
    ex = start([wait("w", "go"), wait("v", "go")])
    assert ex.receive_signal("go", 1, BOB, "k1", T0)
    assert not ex.receive_signal("go", 1, BOB, "k1", T0)
    assert ex.nodes["v"].status == "running"
    assert ex.receive_signal("go", 2, BOB, "k2", T0)
    assert ex.status == "completed"
    assert not ex.receive_signal("go", 2, BOB, "k2", T0)
    assert replayed(ex).signal_keys == {"k1", "k2"}


def test_a_signal_to_a_closed_execution_is_refused() -> None:
    ex = start([wait("w", "go")])
    ex.cancel("no", T0)
    with pytest.raises(DomainError) as refused:
        ex.receive_signal("go", None, BOB, None, T0)
    assert refused.value.code == "execution_closed"


def test_signal_names_and_payloads_are_checked() -> None:
    ex = start([wait("w", "go")])
    with pytest.raises(DomainError) as bad_name:
        ex.receive_signal("no spaces", None, BOB, None, T0)
    assert bad_name.value.code == "invalid_signal_name"
    ex.limits = Limits(max_output_bytes=100)
    with pytest.raises(DomainError) as too_large:
        ex.receive_signal("go", "x" * 200, BOB, None, T0)
    assert too_large.value.code == "payload_too_large"
    assert ex.nodes["w"].status == "running"


def test_the_signals_kept_are_bounded() -> None:
    ex = start([wait("w", "never")])
    for i in range(MAX_KEPT_SIGNALS):
        ex.receive_signal("go", i, BOB, None, T0)
    with pytest.raises(DomainError) as refused:
        ex.receive_signal("go", "one more", BOB, None, T0)
    assert refused.value.code == "too_many_signals"


def test_a_credentials_marker_in_a_payload_stays_text() -> None:
    nodes = [
        wait("w", "go"),
        {
            "id": "use",
            "type": "transform",
            "config": {"set": {"p": "{{ nodes.w.output.payload }}"}},
        },
    ]
    ex = start(nodes, [{"source": "w", "target": "use"}])
    ex.receive_signal("go", "{{ credentials.api.token }}", BOB, None, T0)
    assert ex.output == {"p": "{{ credentials.api.token }}"}


def test_a_timeout_takes_the_timeout_branch_when_there_is_one() -> None:
    nodes = [wait("w", "go", timeout_s=30), done("yes"), done("late")]
    edges = [
        {"source": "w", "target": "yes", "branch": "received"},
        {"source": "w", "target": "late", "branch": "timeout"},
    ]
    ex = start(nodes, edges)
    timer = only_timer(ex, "wait_timeout")
    assert ex.fire_timer(timer, T0 + timedelta(seconds=30))
    assert ex.status == "completed"
    assert ex.nodes["w"].output["branch"] == "timeout"
    assert (ex.nodes["yes"].status, ex.nodes["late"].status) == ("skipped", "completed")
    # The signal comes too late: it is kept, but nothing waits any more.
    with pytest.raises(DomainError):
        ex.receive_signal("go", None, BOB, None, T0 + timedelta(seconds=31))


def test_a_timeout_without_a_timeout_edge_times_the_node_out() -> None:
    ex = start([wait("w", "go", timeout_s=30), done("after")], [{"source": "w", "target": "after"}])
    ex.fire_timer(only_timer(ex, "wait_timeout"), T0 + timedelta(seconds=30))
    assert ex.nodes["w"].status == "timed_out"
    assert ex.status == "failed"


def test_a_signal_in_time_makes_the_timeout_moot() -> None:
    ex = start([wait("w", "go", timeout_s=30), done("after")], [{"source": "w", "target": "after"}])
    timer = only_timer(ex, "wait_timeout")
    ex.receive_signal("go", None, BOB, None, T0 + timedelta(seconds=1))
    assert ex.status == "completed"
    assert not ex.fire_timer(timer, T0 + timedelta(seconds=30))


def test_canceling_while_waiting_cancels_the_node() -> None:
    ex = start([wait("w", "go"), approval("ok")])
    assert ex.cancel("enough", T0)
    assert (ex.nodes["w"].status, ex.nodes["ok"].status) == ("canceled", "canceled")


def test_the_execution_timing_out_while_a_node_waits_cancels_the_node() -> None:
    raw = {
        "name": "w",
        "trigger": {"type": "manual"},
        "nodes": [wait("w", "go")],
        "settings": {"timeout_s": 60},
    }
    definition = parse_definition(raw).to_json()
    ex = Execution.start(uuid4(), "ws", "wf", 1, definition, {}, T0)
    assert ex.fire_timer(only_timer(ex, "execution_timeout"), T0 + timedelta(seconds=60))
    assert (ex.status, ex.nodes["w"].status) == ("timed_out", "canceled")


def test_approval_by_an_approver_role_takes_the_approved_branch() -> None:
    edges = [
        {"source": "ok", "target": "yes", "branch": "approved"},
        {"source": "ok", "target": "no", "branch": "rejected"},
    ]
    ex = start([approval(), done("yes"), done("no")], edges)
    assert ex.nodes["ok"].status == "running"
    at = T0 + timedelta(seconds=5)
    assert ex.decide_approval("ok", "approve", "fine", BOB, "admin", at)
    assert ex.nodes["ok"].output == {
        "branch": "approved",
        "decision": "approve",
        "comment": "fine",
        "actor": BOB,
        "decided_at": at.isoformat(),
    }
    assert (ex.nodes["yes"].status, ex.nodes["no"].status) == ("completed", "skipped")
    decided = [e for e in ex.pending_events if isinstance(e, Execution.ApprovalDecided)]
    assert [(e.decision, e.comment, e.actor) for e in decided] == [("approve", "fine", BOB)]
    # The same decision again is a no-op; another one is a conflict.
    assert not ex.decide_approval("ok", "approve", "fine", BOB, "admin", at)
    with pytest.raises(DomainError) as closed:
        ex.decide_approval("ok", "reject", None, BOB, "admin", at)
    assert closed.value.code == "execution_closed"
    assert replayed(ex).nodes == ex.nodes


def test_rejection_takes_the_rejected_branch() -> None:
    edges = [
        {"source": "ok", "target": "yes", "branch": "approved"},
        {"source": "ok", "target": "no", "branch": "rejected"},
    ]
    ex = start([approval(), done("yes"), done("no")], edges)
    ex.decide_approval("ok", "reject", "no way", BOB, "owner", T0)
    assert (ex.nodes["yes"].status, ex.nodes["no"].status) == ("skipped", "completed")


def test_a_role_not_among_the_approvers_is_refused() -> None:
    ex = start([approval()])
    with pytest.raises(DomainError) as refused:
        ex.decide_approval("ok", "approve", None, BOB, "member", T0)
    assert refused.value.code == "not_an_approver"
    assert ex.nodes["ok"].status == "running"


def test_self_approval_is_refused_unless_allowed() -> None:
    ex = start([approval()])
    with pytest.raises(DomainError) as refused:
        ex.decide_approval("ok", "approve", None, ALICE, "owner", T0)
    assert refused.value.code == "self_approval_refused"
    allowed = start([approval(allow_self_approval=True)])
    assert allowed.decide_approval("ok", "approve", None, ALICE, "owner", T0)
    assert allowed.status == "completed"


def test_an_approval_not_waiting_or_unknown_is_refused() -> None:
    ex = start([approval("first"), approval("second")], [{"source": "first", "target": "second"}])
    with pytest.raises(DomainError) as not_waiting:
        ex.decide_approval("second", "approve", None, BOB, "admin", T0)
    assert not_waiting.value.code == "node_not_waiting"
    with pytest.raises(DomainError) as unknown:
        ex.decide_approval("nope", "approve", None, BOB, "admin", T0)
    assert unknown.value.code == "not_found"


def test_an_approval_timeout_takes_its_timeout_branch() -> None:
    edges = [{"source": "ok", "target": "late", "branch": "timeout"}]
    ex = start([approval(timeout_s=60), done("late")], edges)
    ex.fire_timer(only_timer(ex, "wait_timeout"), T0 + timedelta(seconds=60))
    assert ex.nodes["ok"].output["branch"] == "timeout"
    assert ex.output == {"done": "late"}


def test_definitions_check_wait_configs_and_branches() -> None:
    raw: dict[str, Any] = {
        "name": "w",
        "trigger": {"type": "manual"},
        "nodes": [
            wait("w", "bad name"),
            {"id": "ok", "type": "approval", "config": {"approvers": {"roles": []}}},
            done("d"),
        ],
        "edges": [{"source": "w", "target": "d", "branch": "approved"}],
    }
    with pytest.raises(DefinitionInvalid) as invalid:
        parse_definition(raw)
    paths = {p.path for p in invalid.value.problems}
    assert {"nodes[0].config.signal", "nodes[1].config.approvers.roles", "edges[0].branch"} <= paths


def started_example(name: str, input: Any) -> Execution:
    definition = parse_definition(load_example(name)).to_json()
    return Execution.start(uuid4(), "ws", "wf", 1, definition, input, T0, started_by=ALICE)


def test_the_wait_for_signal_example_reaches_its_documented_outcomes() -> None:
    signalled = started_example("wait-for-signal.json", {"order": 42})
    signalled.receive_signal("paid", {"order": 42}, BOB, None, T0 + timedelta(seconds=1))
    assert signalled.output == {"shipped": 42, "by": "user"}
    assert signalled.nodes["remind"].status == "skipped"
    waited = started_example("wait-for-signal.json", {"order": 42})
    waited.fire_timer(only_timer(waited, "wait_timeout"), T0 + timedelta(seconds=2))
    assert waited.output == {"reminded": 42}
    assert waited.nodes["ship"].status == "skipped"


def test_the_approval_example_reaches_its_documented_outcomes() -> None:
    approved = started_example("approval.json", {"amount": 30})
    with pytest.raises(DomainError):
        approved.decide_approval("review", "approve", "ok", ALICE, "owner", T0)
    approved.decide_approval("review", "approve", "ok", BOB, "admin", T0)
    assert approved.output == {"refunded": 30, "comment": "ok"}
    rejected = started_example("approval.json", {"amount": 30})
    rejected.decide_approval("review", "reject", None, BOB, "admin", T0)
    assert rejected.output == {"refused": 30}
    assert rejected.nodes["refund"].status == "skipped"
