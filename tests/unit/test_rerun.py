"""Re-runs in the domain alone: ancestors of a node, the plan of what is reused (and refused),
the version's graph deciding it, and a re-run's events replaying to the same state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from examples import load_example

from domain.definition import WorkflowDefinition, parse_definition
from domain.execution import Execution
from domain.rerun import RerunPlan, RerunRefused, ancestors, rerun_plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def chain() -> dict[str, Any]:
    """a → b → c, and a side node d that is no ancestor of c."""
    return parse_definition(
        {
            "name": "chain",
            "nodes": [
                {"id": "a", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
                {
                    "id": "b",
                    "type": "http_request",
                    "config": {"url": "http://h/{{ nodes.a.output.n }}"},
                },
                {
                    "id": "c",
                    "type": "transform",
                    "config": {"set": {"got": "{{ nodes.b.output }}"}},
                },
                {"id": "d", "type": "transform", "config": {"set": {"side": True}}},
            ],
            "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
        }
    ).to_json()


def graph(definition: dict[str, Any]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(definition)


def runs(execution: Execution) -> dict[str, tuple[str, Any]]:
    return {node_id: (run.status, run.output) for node_id, run in execution.nodes.items()}


def failed_original() -> Execution:
    """The chain, whose node b failed (so c was skipped)."""
    ex = Execution.start(uuid4(), str(uuid4()), str(uuid4()), 1, chain(), {"n": 7}, T0)
    assert ex.fail_node("b", 1, {"type": "http_error", "message": "500"}, T0, retryable=False)
    assert ex.status == "failed"
    return ex


def rerun_of(original: Execution, from_node: str | None, definition: dict[str, Any]) -> Execution:
    plan = rerun_plan(graph(definition), from_node, runs(original))
    return Execution.start(
        uuid4(),
        original.workspace_id,
        original.workflow_id,
        2,
        definition,
        original.input,
        T1,
        trigger="rerun",
        rerun_of=str(original.id),
        rerun=plan,
    )


def test_ancestors_are_every_node_upstream_in_definition_order() -> None:
    fan = parse_definition(load_example("fan-out-join.json")).to_json()
    assert ancestors(graph(fan), "sum") == ["a", "b"]
    assert ancestors(graph(fan), "a") == []
    assert ancestors(graph(chain()), "c") == ["a", "b"]
    assert ancestors(graph(chain()), "d") == []


def test_plan_reuses_the_ancestors_outputs_only() -> None:
    original = failed_original()
    plan = rerun_plan(graph(chain()), "b", runs(original))
    assert plan == RerunPlan(reused={"a": {"n": 7}})
    assert rerun_plan(graph(chain()), None, runs(original)) == RerunPlan()


def test_plan_refuses_an_unknown_node_and_an_ancestor_without_output() -> None:
    original = failed_original()
    with pytest.raises(RerunRefused) as unknown:
        rerun_plan(graph(chain()), "zz", runs(original))
    assert unknown.value.path == "from_node"
    with pytest.raises(RerunRefused) as no_output:
        rerun_plan(graph(chain()), "c", runs(original))  # its ancestor b failed
    assert no_output.value.path == "from_node" and "'b'" in no_output.value.message


def test_plan_follows_the_chosen_versions_graph() -> None:
    """The latest version added node `e` between a and b: it is an ancestor the original never
    ran, so b cannot be re-run from on that version; c is not a node of a version without it."""
    original = failed_original()
    latest = chain()
    latest["nodes"].insert(1, {"id": "e", "type": "transform", "config": {"set": {"x": 1}}})
    latest["edges"] = [
        {"source": "a", "target": "e"},
        {"source": "e", "target": "b"},
        {"source": "b", "target": "c"},
    ]
    with pytest.raises(RerunRefused, match="not a node of the original"):
        rerun_plan(graph(latest), "b", runs(original))
    shorter = chain()
    shorter["nodes"] = [n for n in shorter["nodes"] if n["id"] != "c"]
    shorter["edges"] = [{"source": "a", "target": "b"}]
    with pytest.raises(RerunRefused, match="not a node of the chosen version"):
        rerun_plan(graph(shorter), "c", runs(original))


def test_a_rerun_records_the_reused_outputs_and_runs_the_rest() -> None:
    original = failed_original()
    ex = rerun_of(original, "b", chain())
    assert ex.rerun_of == str(original.id) and ex.trigger == "rerun"
    reused = [e for e in ex.pending_events if isinstance(e, Execution.NodeReused)]
    assert [(e.node_id, e.output) for e in reused] == [("a", {"n": 7})]
    assert ex.nodes["a"].reused and ex.nodes["a"].status == "completed"
    assert ex.nodes["a"].attempts == 0  # never scheduled
    assert ex.nodes["b"].status == "scheduled"  # runs again, with a's kept output
    scheduled = [e for e in ex.pending_events if isinstance(e, Execution.NodeScheduled)]
    assert {e.node_id for e in scheduled} == {"b", "d"}
    task = next(e.task for e in scheduled if e.node_id == "b")
    assert task is not None and task["config"]["url"] == "http://h/7"
    assert ex.complete_node("b", 1, {"ok": 1}, T1)
    assert ex.status == "completed"
    assert not ex.nodes["c"].reused and ex.nodes["c"].output == {"got": {"ok": 1}}


def test_skipped_ancestors_are_skipped_again() -> None:
    """order-followup with an unpaid order: `shape` was skipped; re-running the leaf `unpaid`'s
    sibling branch keeps the skip rather than refusing."""
    definition = parse_definition(load_example("order-followup.json")).to_json()
    ex = Execution.start(
        uuid4(), "w", "f", 1, definition, {"base_url": "http://h", "order_id": 7}, T0
    )
    body = {"status_code": 200, "body": {"id": 7, "status": "pending", "total": 70}}
    assert ex.complete_node("fetch", 1, body, T0)
    assert ex.status == "completed"
    g = graph(definition)
    node = next(n for n in ex.nodes if ex.nodes[n].status == "skipped" and ancestors(g, n))
    plan = rerun_plan(g, node, runs(ex))
    assert plan.reused  # fetch and the condition at least


def test_a_rerun_replays_from_its_own_events() -> None:
    """The reused outputs are in the re-run's events: folding them gives the same state, with
    no access to the original."""
    original = failed_original()
    ex = rerun_of(original, "b", chain())
    events = list(ex.pending_events)
    replayed: Execution | None = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed is not None
    assert runs(replayed) == runs(ex)
    assert replayed.nodes["a"].reused and replayed.rerun_of == str(original.id)


def test_an_execution_started_before_reruns_loads_without_rerun_of() -> None:
    ex = Execution.start(uuid4(), "w", "f", 1, chain(), {"n": 1}, T0)
    started = ex.pending_events[0]
    del started.__dict__["rerun_of"]
    loaded = started.mutate(None)
    assert loaded is not None and loaded.rerun_of is None
