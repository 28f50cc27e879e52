"""The workflow shapes the benchmark runs, as LinkFlow definitions: `pure-3` (transform →
condition → transform, no I/O) and `http-3` (three sequential http_request nodes against the
harness's local target server). The DBOS peer writes the same shapes in `bench.dbos_peer`.
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


def definition(shape: str, target: str) -> dict[str, Any]:
    return PURE_3 if shape == "pure-3" else http_3(target)
