"""Properties of the Execution aggregate over generated workflows and worker behaviour (with
waiting nodes, signals arriving at random points and approvals): it never gets stuck, ends with
every node settled, and replays to the same state; a re-run of a closed one from any node reuses
exactly its ancestors' outputs and does the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.definition import parse_definition
from domain.execution import Execution
from domain.rerun import RerunRefused, ancestors, rerun_plan
from domain.statuses import IN_FLIGHT, NODE_TERMINAL
from domain.waits import WAIT_BRANCHES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIGNALS = ["a", "b"]
SENDER = {"type": "user", "id": "someone"}


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 7))
    nodes: list[dict[str, Any]] = []
    for i in range(size):
        kind = draw(
            st.sampled_from(
                ["http_request", "transform", "condition", "delay", "wait_for_signal", "approval"]
            )
        )
        node: dict[str, Any] = {"id": f"n{i}", "type": kind}
        if kind == "http_request":
            node["config"] = {"url": "http://example.org/x"}
            if draw(st.booleans()):
                node["retry"] = {"max_attempts": draw(st.integers(1, 3)), "initial_interval_s": 1}
            if draw(st.booleans()):
                node["timeout_s"] = 5
            node["on_error"] = draw(st.sampled_from(["stop", "continue"]))
        elif kind == "transform":
            node["config"] = {"set": {"i": i}}
        elif kind == "condition":
            node["config"] = {
                "conditions": [
                    {
                        "value": draw(st.integers(0, 1)),
                        "operator": "eq",
                        "operand": 1,
                        "branch": "yes",
                    }
                ]
            }
        elif kind == "wait_for_signal":
            node["config"] = {"signal": draw(st.sampled_from(SIGNALS))}
        elif kind == "approval":
            node["config"] = {"approvers": {"roles": ["owner"]}}
        else:
            node["config"] = {"seconds": draw(st.integers(0, 3))}
        if kind in WAIT_BRANCHES and draw(st.booleans()):
            node["config"]["timeout_s"] = draw(st.integers(1, 5))
        nodes.append(node)
    edges = []
    for j in range(1, size):
        for i in draw(st.sets(st.integers(0, j - 1), max_size=2)):
            edge: dict[str, Any] = {"source": f"n{i}", "target": f"n{j}"}
            if nodes[i]["type"] == "condition":
                edge["branch"] = draw(st.sampled_from(["yes", "else"]))
            elif nodes[i]["type"] in WAIT_BRANCHES and draw(st.booleans()):
                edge["branch"] = draw(st.sampled_from(sorted(WAIT_BRANCHES[nodes[i]["type"]])))
            edges.append(edge)
    return {"name": "generated", "nodes": nodes, "edges": edges}


def possible_actions(ex: Execution) -> list[tuple[str, Any]]:
    actions: list[tuple[str, Any]] = []
    for node_id, run in ex.nodes.items():
        if run.status == "scheduled" and ex.graph.node(node_id).type == "http_request":
            actions += [("complete", node_id), ("fail", node_id)]
        if run.status == "running" and ex.graph.node(node_id).type == "approval":
            actions += [("approve", node_id), ("reject", node_id)]
    actions += [("fire", t) for t in ex.timers if ex.timer_matters(t)]
    # A signal may arrive whenever some node waits for its name or may still come to.
    asked = {
        ex.graph.node(node_id).config["signal"]
        for node_id, run in ex.nodes.items()
        if ex.graph.node(node_id).type == "wait_for_signal" and run.status in ("pending", "running")
    }
    actions += [("signal", name) for name in sorted(asked)]
    return actions


def drive(ex: Execution, choices: list[int], now: datetime) -> datetime:
    """Complete, fail, fire, signal and decide at random until the execution closes (or the
    choices run out); asserts it is never stuck while running."""
    for choice in choices:
        if not ex.running:
            break
        actions = possible_actions(ex)
        assert actions, f"stuck: {[(n, r.status) for n, r in ex.nodes.items()]}"
        kind, target = actions[choice % len(actions)]
        now += timedelta(seconds=1)
        if kind == "complete":
            assert ex.complete_node(target, ex.nodes[target].attempts, {"ok": True}, now)
        elif kind == "fail":
            error = {"type": "http_status", "message": "HTTP 500"}
            assert ex.fail_node(target, ex.nodes[target].attempts, error, now)
        elif kind == "signal":
            assert ex.receive_signal(target, choice, SENDER, f"k{choice}-{now}", now)
        elif kind in ("approve", "reject"):
            assert ex.decide_approval(target, kind, None, SENDER, "owner", now)
        else:
            assert ex.fire_timer(target, now)
    return now


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition=workflows(), choices=st.lists(st.integers(0, 1000), min_size=60, max_size=60))
def test_every_execution_settles_and_replays_to_the_same_state(
    definition: dict[str, Any], choices: list[int]
) -> None:
    graph = parse_definition(definition).to_json()
    ex = Execution.start(uuid4(), "ws", "wf", 1, graph, {}, T0)
    drive(ex, choices, T0)
    events = ex.collect_events()
    if not ex.running:
        assert not any(run.status in IN_FLIGHT for run in ex.nodes.values())
        if ex.status == "completed":
            assert all(run.status in NODE_TERMINAL for run in ex.nodes.values())
    completions = [(e.node_id, e.attempt) for e in events if isinstance(e, Execution.NodeCompleted)]
    assert len(completions) == len(set(completions))
    assert len({e.node_id for e in events if isinstance(e, Execution.NodeCompleted)}) == len(
        completions
    )
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert (rebuilt.status, rebuilt.output, rebuilt.nodes, rebuilt.timers, rebuilt.inbox) == (
        ex.status,
        ex.output,
        ex.nodes,
        ex.timers,
        ex.inbox,
    )
    # Each signal is taken once: what was received is what was taken plus what is kept.
    received = [e for e in events if isinstance(e, Execution.SignalReceived)]
    taken = [
        e.output["signal"]
        for e in events
        if isinstance(e, Execution.NodeCompleted)
        and isinstance(e.output, dict)
        and e.output.get("branch") == "received"
    ]
    kept = [name for name, signals in ex.inbox.items() for _ in signals]
    assert sorted(e.name for e in received) == sorted(taken + kept)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    definition=workflows(),
    choices=st.lists(st.integers(0, 1000), min_size=120, max_size=120),
    pick=st.integers(0, 100),
)
def test_a_rerun_from_any_node_reuses_its_ancestors_settles_and_replays(
    definition: dict[str, Any], choices: list[int], pick: int
) -> None:
    """A closed execution re-run from a random node: refused only when an ancestor has no
    output; otherwise its ancestors are reused (never scheduled), it never gets stuck, and its
    own events replay to the same state."""
    graph = parse_definition(definition).to_json()
    original = Execution.start(uuid4(), "ws", "wf", 1, graph, {}, T0)
    now = drive(original, choices[:60], T0)
    if original.running:
        return
    from_node = original.graph.nodes[pick % len(original.graph.nodes)].id
    runs = {node_id: (run.status, run.output) for node_id, run in original.nodes.items()}
    upstream = ancestors(original.graph, from_node)
    try:
        plan = rerun_plan(original.graph, from_node, runs)
    except RerunRefused:
        assert any(runs[n][0] not in ("completed", "skipped") for n in upstream)
        return
    assert set(plan.reused) | set(plan.skipped) == set(upstream)
    ex = Execution.start(
        uuid4(), "ws", "wf", 1, graph, {}, now, trigger="rerun", rerun_of="o", rerun=plan
    )
    drive(ex, choices[60:], now)
    events = ex.collect_events()
    scheduled = {e.node_id for e in events if isinstance(e, Execution.NodeScheduled)}
    assert not scheduled & set(upstream)
    assert {n for n, run in ex.nodes.items() if run.reused} == set(plan.reused)
    assert all(ex.nodes[n].output == runs[n][1] for n in plan.reused)
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert (rebuilt.status, rebuilt.output, rebuilt.nodes, rebuilt.rerun_of) == (
        ex.status,
        ex.output,
        ex.nodes,
        "o",
    )
