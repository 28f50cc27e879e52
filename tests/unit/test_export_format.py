"""Unit tests for domain.export_format: detection and normalisation of LinkFlow exports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from examples import load_example

from domain.definition import WorkflowDefinition, parse_definition
from domain.export_format import is_export_format, normalise_export


def shape(definition: WorkflowDefinition) -> dict[str, Any]:
    """Node ids/types and edges; an edge's branch is "default" when it is the condition's
    default branch (the export calls it "else", order-followup.json "no")."""
    defaults = {
        n.id: n.config.get("default", "else") for n in definition.nodes if n.type == "condition"
    }
    edges = []
    for e in definition.edges:
        branch = e.branch
        if branch is not None and branch == defaults.get(e.source):
            branch = "default"
        edges.append((e.source, e.target, branch))
    return {"nodes": [(n.id, n.type) for n in definition.nodes], "edges": edges}


def test_export_example_has_the_shape_of_order_followup() -> None:
    exported = parse_definition(normalise_export(load_example("linkflow-export.json")))
    reference = parse_definition(load_example("order-followup.json"))
    assert shape(exported) == shape(reference)
    for node_id in ("fetch", "shape", "unpaid"):
        assert exported.node(node_id).config == reference.node(node_id).config
    assert exported.node("paid").config["conditions"] == reference.node("paid").config["conditions"]


def test_export_example_normalised_exactly() -> None:
    data = normalise_export(load_example("linkflow-export.json"))
    assert data["trigger"] == {"type": "manual"}
    assert "trigger_type" not in data and "viewport" not in data
    assert data["nodes"][0] == {
        "id": "fetch",
        "type": "http_request",
        "name": "Fetch order",
        "config": {"method": "GET", "url": "{{ trigger.base_url }}/orders/{{ trigger.order_id }}"},
    }
    assert data["nodes"][1]["config"] == {
        "conditions": [
            {
                "value": "{{ nodes.fetch.output.body.status }}",
                "operator": "eq",
                "operand": "paid",
                "branch": "yes",
            }
        ],
        "default": "else",
    }
    assert data["nodes"][2] == {"id": "wait", "type": "delay", "config": {"seconds": 1}}
    assert data["edges"] == [
        {"source": "fetch", "target": "paid"},
        {"source": "paid", "target": "wait", "branch": "yes"},
        {"source": "wait", "target": "shape"},
        {"source": "paid", "target": "unpaid", "branch": "else"},
    ]


def test_normalise_does_not_modify_its_input() -> None:
    raw = load_example("linkflow-export.json")
    before = copy.deepcopy(raw)
    normalise_export(raw)
    assert raw == before


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "x", "nodes": [{"id": "a", "type": "delay", "data": {}}]}, True),
        ({"name": "x", "trigger_type": "manual", "nodes": []}, True),
        (
            {
                "name": "x",
                "nodes": [],
                "edges": [{"source": "a", "target": "b", "sourceHandle": None}],
            },
            True,
        ),
        (
            {
                "name": "x",
                "trigger": {"type": "manual"},
                "nodes": [{"id": "a", "type": "delay"}],
                "edges": [{"source": "a", "target": "b"}],
            },
            False,
        ),
        ({"name": "x", "nodes": "garbage"}, False),
    ],
)
def test_is_export_format_detection(raw: dict[str, Any], expected: bool) -> None:
    assert is_export_format(raw) is expected


@pytest.mark.parametrize(
    ("engine", "api"),
    [
        ("action_http_request", "http_request"),
        ("logic_condition", "condition"),
        ("logic_delay", "delay"),
        ("transform", "transform"),
        ("action_transform", "transform"),
        ("http_request", "http_request"),
        ("action_unknown", "action_unknown"),
    ],
)
def test_engine_type_names(engine: str, api: str) -> None:
    data = normalise_export({"trigger_type": "manual", "nodes": [{"id": "n", "type": engine}]})
    assert data["nodes"][0]["type"] == api


@pytest.mark.parametrize(
    ("duration", "unit", "seconds"),
    [
        (5, None, 5),
        (2, "minutes", 120),
        (1.5, "hours", 5400),
        (1, "days", 86400),
        ("{{ trigger.wait }}", "seconds", "{{ trigger.wait }}"),
    ],
)
def test_delay_units(duration: Any, unit: str | None, seconds: Any) -> None:
    config: dict[str, Any] = {"duration": duration}
    if unit:
        config["unit"] = unit
    node = {"id": "w", "type": "logic_delay", "data": {"config": config}}
    assert normalise_export({"nodes": [node]})["nodes"][0]["config"] == {"seconds": seconds}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"operation": "set", "values": {"a": 1}}, {"set": {"a": 1}}),
        ({"operation": "remove", "fields": ["a.b"]}, {"remove": ["a.b"]}),
        ({"operation": "pick", "fields": ["x"]}, {"pick": ["x"]}),
        (
            {"operation": "set", "values": {"a": 1}, "input": "{{ trigger }}"},
            {"input": "{{ trigger }}", "set": {"a": 1}},
        ),
        ({"set": {"a": 1}}, {"set": {"a": 1}}),
    ],
)
def test_transform_operations(config: dict[str, Any], expected: dict[str, Any]) -> None:
    node = {"id": "t", "type": "transform", "data": {"config": config}}
    assert normalise_export({"nodes": [node]})["nodes"][0]["config"] == expected


def test_condition_without_output_gets_true_branch_and_keeps_templates() -> None:
    node = {
        "id": "c",
        "type": "logic_condition",
        "data": {
            "config": {
                "mode": "if",
                "conditions": [
                    {"field": "{{ trigger.n }}", "operator": "gt", "value": 3},
                ],
            }
        },
    }
    config = normalise_export({"nodes": [node]})["nodes"][0]["config"]
    assert config == {
        "conditions": [
            {"value": "{{ trigger.n }}", "operator": "gt", "operand": 3, "branch": "true"}
        ],
        "default": "else",
    }


def test_if_mode_with_false_handle_uses_false_as_default() -> None:
    raw = {
        "trigger_type": "manual",
        "name": "if/else",
        "nodes": [
            {
                "id": "c",
                "type": "logic_condition",
                "data": {
                    "config": {
                        "mode": "if",
                        "conditions": [{"field": "trigger.ok", "operator": "is_true"}],
                    }
                },
            },
            {
                "id": "y",
                "type": "transform",
                "data": {"config": {"operation": "set", "values": {"r": "y"}}},
            },
            {
                "id": "n",
                "type": "transform",
                "data": {"config": {"operation": "set", "values": {"r": "n"}}},
            },
        ],
        "edges": [
            {"id": "e1", "source": "c", "target": "y", "sourceHandle": "true"},
            {"id": "e2", "source": "c", "target": "n", "sourceHandle": "false"},
        ],
    }
    definition = parse_definition(raw)
    assert definition.node("c").config["default"] == "false"
    assert [e.branch for e in definition.edges] == ["true", "false"]


def test_node_fields_from_data_and_editor_fields_dropped() -> None:
    node = {
        "id": "f",
        "type": "action_http_request",
        "position": {"x": 1, "y": 2},
        "width": 150,
        "selected": True,
        "data": {
            "label": "Fetch",
            "config": {"url": "http://x"},
            "retry": {"max_attempts": 3},
            "timeout_s": 5,
            "on_error": "continue",
            "icon": "globe",
        },
    }
    [out] = normalise_export({"nodes": [node]})["nodes"]
    assert out == {
        "id": "f",
        "type": "http_request",
        "name": "Fetch",
        "config": {"url": "http://x"},
        "retry": {"max_attempts": 3},
        "timeout_s": 5,
        "on_error": "continue",
    }


def test_source_handle_dropped_for_null_or_non_condition_sources() -> None:
    raw = {
        "nodes": [
            {"id": "a", "type": "action_http_request", "data": {"config": {"url": "u"}}},
            {"id": "b", "type": "logic_delay", "data": {"config": {"duration": 1}}},
        ],
        "edges": [
            {"id": "e1", "source": "a", "target": "b", "sourceHandle": "out"},
            {"id": "e2", "source": "a", "target": "b", "sourceHandle": None},
        ],
    }
    assert normalise_export(raw)["edges"] == [
        {"source": "a", "target": "b"},
        {"source": "a", "target": "b"},
    ]


def test_trigger_object_accepted_and_trigger_config_merged() -> None:
    with_object = normalise_export({"trigger": {"type": "webhook"}, "nodes": [{"data": {}}]})
    assert with_object["trigger"] == {"type": "webhook"}
    merged = normalise_export({"trigger_type": "schedule", "trigger_config": {"cron": "* * * * *"}})
    assert merged["trigger"] == {"type": "schedule", "cron": "* * * * *"}
