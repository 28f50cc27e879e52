"""The workflow shapes the benchmark runs, as LinkFlow definitions: `pure-3` (transform →
condition → transform, no I/O) and `http-3` (three sequential http_request nodes against the
harness's local target server); `http_recorded`, the http shape whose calls the target records
(the fault shapes). The DBOS peer writes the same shapes in `bench.dbos_peer`.
"""

from __future__ import annotations

from typing import Any

SHAPES = ("pure-3", "http-3")

PURE_3: dict[str, Any] = {
    "name": "pure-3",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
        {
            "id": "b",
            "type": "condition",
            "config": {
                "conditions": [
                    {
                        "value": "{{ nodes.a.output.n }}",
                        "operator": "gte",
                        "operand": 0,
                        "branch": "yes",
                    }
                ]
            },
        },
        {"id": "c", "type": "transform", "config": {"set": {"done": "{{ nodes.a.output.n }}"}}},
    ],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c", "branch": "yes"}],
}


def http_3(target: str) -> dict[str, Any]:
    nodes = [
        {"id": f"h{i}", "type": "http_request", "config": {"url": f"{target}/ok/{i}"}}
        for i in range(3)
    ]
    edges = [{"source": "h0", "target": "h1"}, {"source": "h1", "target": "h2"}]
    return {"name": "http-3", "nodes": nodes, "edges": edges}


def http_recorded(target: str, n: int) -> dict[str, Any]:
    """`n` sequential http_request nodes `h0…` calling `/call/{execution id}/h{i}`: the target
    records each call, so the fault shapes can set the calls against the event log."""
    nodes = [
        {
            "id": f"h{i}",
            "type": "http_request",
            "config": {"url": f"{target}/call/{{{{ execution.id }}}}/h{i}"},
        }
        for i in range(n)
    ]
    edges = [{"source": f"h{i}", "target": f"h{i + 1}"} for i in range(n - 1)]
    return {"name": f"http-{n}-recorded", "nodes": nodes, "edges": edges}


def definition(shape: str, target: str) -> dict[str, Any]:
    return PURE_3 if shape == "pure-3" else http_3(target)
