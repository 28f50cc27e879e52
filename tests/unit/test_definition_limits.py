"""Unit tests for the bounds of domain.definition.parse_definition: the node count is refused
first (so a huge body costs little), parse time grows linearly with the nodes of a valid
definition, and cycle searches in an invalid one are bounded without changing their answers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from domain.definition import DefinitionInvalid, Problem, parse_definition


def transform(node_id: str, source: str | None = None) -> dict[str, Any]:
    value = f"{{{{ nodes.{source}.output.x }}}}" if source else "{{ trigger.x }}"
    return {"id": node_id, "type": "transform", "config": {"set": {"x": value}}}


def chain(count: int) -> dict[str, Any]:
    nodes = [transform("n0")] + [transform(f"n{i}", f"n{i - 1}") for i in range(1, count)]
    edges = [{"source": f"n{i - 1}", "target": f"n{i}"} for i in range(1, count)]
    return {"name": "chain", "nodes": nodes, "edges": edges}


def branches(count: int) -> dict[str, Any]:
    """One condition with a branch to each of the other nodes."""
    conditions = [
        {"value": "{{ trigger.a }}", "operator": "eq", "operand": i, "branch": f"b{i}"}
        for i in range(count - 1)
    ]
    nodes = [{"id": "c", "type": "condition", "config": {"conditions": conditions}}]
    nodes += [transform(f"n{i}", "c") for i in range(count - 1)]
    edges = [{"source": "c", "target": f"n{i}", "branch": f"b{i}"} for i in range(count - 1)]
    return {"name": "branches", "nodes": nodes, "edges": edges}


def join(count: int) -> dict[str, Any]:
    """Every node feeds the last one, which reads them all."""
    nodes = [transform(f"n{i}") for i in range(count - 1)]
    reads = {f"v{i}": f"{{{{ nodes.n{i}.output.x }}}}" for i in range(count - 1)}
    nodes.append({"id": "last", "type": "transform", "config": {"set": reads}})
    edges = [{"source": f"n{i}", "target": "last"} for i in range(count - 1)]
    return {"name": "join", "nodes": nodes, "edges": edges}


def exported(count: int) -> dict[str, Any]:
    raw = chain(count)
    for node in raw["nodes"]:
        node["data"] = {"label": node["id"], "config": node.pop("config")}
        node["type"] = "action_transform"
    raw["trigger_type"] = "manual"
    return raw


# ---------------------------------------------------------------- nodes per workflow


def test_more_nodes_than_the_limit_is_one_problem_at_nodes() -> None:
    raw = chain(4)
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(raw, max_nodes=3)
    assert info.value.problems == [
        Problem("nodes", "a workflow has at most 3 nodes; this one has 4")
    ]
    assert len(parse_definition(raw, max_nodes=4).nodes) == 4


def test_the_default_limit_is_2000_nodes() -> None:
    assert len(parse_definition(chain(2000)).nodes) == 2000
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(chain(2001))
    assert [p.path for p in info.value.problems] == ["nodes"]


def test_the_export_format_is_counted_too() -> None:
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(exported(11), max_nodes=10)
    assert [p.path for p in info.value.problems] == ["nodes"]


def test_a_hundred_thousand_nodes_are_refused_before_they_are_validated() -> None:
    raw = {
        "name": "huge",
        "nodes": [
            {"id": f"n{i}", "type": "nope", "config": {"x": "{{ a. }}"}} for i in range(100_000)
        ],
        "edges": [{"source": f"n{i}", "target": f"n{i}"} for i in range(100_000)],
    }
    started = time.perf_counter()
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(raw)
    assert time.perf_counter() - started < 0.05
    assert info.value.problems == [
        Problem("nodes", "a workflow has at most 2000 nodes; this one has 100000")
    ]


# ---------------------------------------------------------------- linear parse time


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", [chain, branches, join, exported])
def test_parse_time_grows_linearly_with_the_nodes(shape: Callable[[int], Any]) -> None:
    """2,000 nodes take about 8 times as long as 250 (quadratic would be 64 times)."""
    small, large = shape(250), shape(2000)
    parse_definition(small), parse_definition(large)  # compiled expressions cached
    ratio = best_of(3, lambda: parse_definition(large)) / best_of(
        3, lambda: parse_definition(small)
    )
    assert ratio < 20, ratio


# ---------------------------------------------------------------- cycles


def reference_cycle_edges(edges: list[tuple[str, str]]) -> list[int]:
    """The edges that, added in definition order, close a cycle (the rule, searched plainly)."""
    children: dict[str, list[str]] = {}
    closing = []
    for j, (source, target) in enumerate(edges):
        seen, stack = {target}, [target]
        while stack:
            node = stack.pop()
            for child in children.get(node, []):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        if source in seen:
            closing.append(j)
        else:
            children.setdefault(source, []).append(target)
    return closing


def test_cycle_problems_are_the_edges_that_close_a_cycle() -> None:
    rng = random.Random(12)
    for _ in range(300):
        count = rng.randint(2, 9)
        pairs = {
            (f"n{rng.randrange(count)}", f"n{rng.randrange(count)}")
            for _ in range(rng.randint(1, 20))
        }
        edges = [(s, t) for s, t in sorted(pairs, key=lambda _: rng.random()) if s != t]
        raw = {
            "name": "random",
            "nodes": [transform(f"n{i}") for i in range(count)],
            "edges": [{"source": s, "target": t} for s, t in edges],
        }
        expected = [f"edges[{j}]" for j in reference_cycle_edges(edges)]
        try:
            parse_definition(raw)
            found = []
        except DefinitionInvalid as exc:
            found = [p.path for p in exc.problems]
        assert found == expected, edges


def test_cycle_searches_are_bounded() -> None:
    """Every node of a 2,000-node chain also points back to the first: each back edge's search
    walks the chain. The searches stop, and the answer says more edges were not searched."""
    raw = chain(2000)
    raw["edges"] += [{"source": f"n{i}", "target": "n0"} for i in range(1999, 0, -1)]
    started = time.perf_counter()
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(raw)
    assert time.perf_counter() - started < 1.0
    problems = info.value.problems
    assert problems[0].path == "edges[1999]" and "closes a cycle" in problems[0].message
    assert problems[-1].path == "edges"
    assert "not searched" in problems[-1].message


def test_one_cycle_in_a_large_dag_is_found_exactly() -> None:
    """Edges outside any cycle are not searched: a 2,000-node DAG with one cycle at its end
    names exactly the closing edge."""
    raw = join(2000)
    raw["edges"].append({"source": "last", "target": "n5"})
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(raw)
    [problem] = info.value.problems
    assert problem.path == f"edges[{len(raw['edges']) - 1}]"
    assert "last -> n5 -> last" in problem.message
