"""Unit tests for domain.definition: the model, its helpers and parse_definition's problems."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from examples import example_names, load_example

from domain.definition import (
    DefinitionInvalid,
    Problem,
    RetryPolicy,
    WorkflowDefinition,
    branches_of,
    parse_definition,
)


def base() -> dict[str, Any]:
    """A small valid definition: fetch -> paid -(yes)-> shape."""
    return {
        "name": "t",
        "nodes": [
            {"id": "fetch", "type": "http_request", "config": {"url": "{{ trigger.url }}"}},
            {
                "id": "paid",
                "type": "condition",
                "config": {
                    "conditions": [
                        {
                            "value": "{{ nodes.fetch.output.body.status }}",
                            "operator": "eq",
                            "operand": "paid",
                            "branch": "yes",
                        }
                    ],
                    "default": "no",
                },
            },
            {"id": "shape", "type": "transform", "config": {"set": {"total": 1}}},
        ],
        "edges": [
            {"source": "fetch", "target": "paid"},
            {"source": "paid", "target": "shape", "branch": "yes"},
        ],
    }


def problems_of(raw: Any) -> list[Problem]:
    with pytest.raises(DefinitionInvalid) as info:
        parse_definition(raw)
    return info.value.problems


def paths_of(raw: Any) -> list[str]:
    return [p.path for p in problems_of(raw)]


# --------------------------------------------------------------------------- valid input


def test_every_example_file_parses() -> None:
    names = example_names()
    assert len(names) == 9
    for name in names:
        definition = parse_definition(load_example(name))
        assert isinstance(definition, WorkflowDefinition), name
        assert definition.nodes, name


def test_base_definition_parses_with_defaults() -> None:
    definition = parse_definition(base())
    assert definition.trigger.type == "manual"
    assert definition.settings.timeout_s is None
    fetch = definition.node("fetch")
    assert fetch.on_error == "stop"
    assert fetch.queue == "default"
    assert fetch.retry is None


def test_helpers_on_order_followup() -> None:
    definition = parse_definition(load_example("order-followup.json"))
    assert definition.leaves() == ["shape", "unpaid"]
    assert [e.source for e in definition.incoming("paid")] == ["fetch"]
    assert branches_of(definition.node("paid")) == {"yes", "no"}
    assert branches_of(definition.node("fetch")) == set()
    with pytest.raises(KeyError):
        definition.node("nope")


def test_fan_in_has_one_leaf_with_two_incoming_edges() -> None:
    definition = parse_definition(load_example("fan-out-join.json"))
    assert definition.leaves() == ["sum"]
    assert [e.source for e in definition.incoming("sum")] == ["a", "b"]


def test_to_json_round_trips_and_keeps_none_inside_config() -> None:
    raw = base()
    raw["nodes"][2]["config"]["set"]["nothing"] = None
    definition = parse_definition(raw)
    data = definition.to_json()
    assert "description" not in data
    assert data["nodes"][2]["config"]["set"] == {"total": 1, "nothing": None}
    assert parse_definition(data) == definition


def test_schedule_trigger_round_trips_without_its_defaults() -> None:
    raw = base()
    raw["trigger"] = {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Berlin"}
    definition = parse_definition(raw)
    assert definition.trigger.catch_up == "latest"
    assert definition.to_json()["trigger"] == raw["trigger"]


@pytest.mark.parametrize(
    ("trigger", "path", "fragment"),
    [
        ({"type": "schedule"}, "trigger.cron", "needs a cron"),
        ({"type": "schedule", "cron": "61 * * * *"}, "trigger.cron", "not a valid cron"),
        (
            {"type": "schedule", "cron": "* * * * *", "timezone": "Mars/Base"},
            "trigger.timezone",
            "time zone",
        ),
        ({"type": "webhook", "methods": []}, "trigger.methods", "at least one method"),
        ({"type": "webhook", "methods": ["TRACE"]}, "trigger.methods[0]", ""),
        (
            {"type": "webhook", "auth": {"type": "header", "credential": "k"}},
            "trigger.auth",
            "header's name",
        ),
        (
            {"type": "webhook", "auth": {"type": "hmac", "secret": "s3"}},
            "trigger.auth.secret",
            "credential",
        ),
        ({"type": "webhook", "respond": "later"}, "trigger.respond", ""),
    ],
)
def test_invalid_triggers_name_the_field(trigger: dict, path: str, fragment: str) -> None:
    raw = base()
    raw["trigger"] = trigger
    with pytest.raises(DefinitionInvalid) as caught:
        parse_definition(raw)
    matching = [p for p in caught.value.problems if p.path == path]
    assert matching, caught.value.problems
    assert fragment in matching[0].message


def test_webhook_trigger_defaults_to_post() -> None:
    raw = base()
    raw["trigger"] = {"type": "webhook", "auth": {"type": "bearer", "credential": "hook"}}
    definition = parse_definition(raw)
    assert definition.trigger.allowed_methods == ["POST"]
    assert definition.to_json()["trigger"] == raw["trigger"]


def test_retry_delay_before_sequence() -> None:
    policy = RetryPolicy(max_attempts=6, initial_interval_s=1, backoff=2, max_interval_s=5)
    assert [policy.delay_before(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_retry_delay_before_defaults_and_huge_attempts() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 1
    assert policy.delay_before(1) == 1.0
    assert policy.delay_before(10_000) == 3600
    with pytest.raises(ValueError):
        policy.delay_before(0)


# --------------------------------------------------------------------------- problems


def test_not_an_object_is_a_root_problem() -> None:
    assert problems_of([1, 2]) == [Problem("", "a workflow definition must be a JSON object")]


@pytest.mark.parametrize("nodes", [[], None])
def test_no_nodes_is_reported_at_nodes(nodes: Any) -> None:
    raw = {"name": "x"} if nodes is None else {"name": "x", "nodes": nodes}
    assert problems_of(raw) == [Problem("nodes", "a workflow needs at least one node")]


def test_cycle_reported_at_closing_edge_naming_its_nodes() -> None:
    raw = base()
    raw["edges"].append({"source": "shape", "target": "fetch"})
    [problem] = problems_of(raw)
    assert problem.path == "edges[2]"
    assert "shape -> fetch -> paid -> shape" in problem.message


def test_self_loop_is_a_cycle() -> None:
    raw = base()
    raw["edges"].append({"source": "shape", "target": "shape"})
    [problem] = problems_of(raw)
    assert problem.path == "edges[2]"
    assert "cycle" in problem.message and "shape" in problem.message


def test_dangling_edges() -> None:
    raw = base()
    raw["edges"] += [
        {"source": "fetch", "target": "ghost"},
        {"source": "phantom", "target": "shape"},
    ]
    problems = problems_of(raw)
    assert [p.path for p in problems] == ["edges[2].target", "edges[3].source"]
    assert "ghost" in problems[0].message
    assert "phantom" in problems[1].message


def test_duplicate_node_ids_one_problem_per_duplicate() -> None:
    raw = base()
    raw["nodes"] += [copy.deepcopy(raw["nodes"][2]), copy.deepcopy(raw["nodes"][2])]
    problems = problems_of(raw)
    assert [p.path for p in problems] == ["nodes[3].id", "nodes[4].id"]
    assert "shape" in problems[0].message


def test_unknown_node_type() -> None:
    raw = base()
    raw["nodes"][0]["type"] = "send_email"
    problems = problems_of(raw)
    assert [p.path for p in problems] == ["nodes[0].type"]
    assert "send_email" in problems[0].message


@pytest.mark.parametrize(
    ("node", "path"),
    [
        ({"id": "h", "type": "http_request"}, "nodes[3].config.url"),
        (
            {"id": "h", "type": "http_request", "config": {"url": "u", "method": "FETCH"}},
            "nodes[3].config.method",
        ),
        (
            {"id": "h", "type": "http_request", "config": {"url": "u", "headers": {"a": 1}}},
            "nodes[3].config.headers.a",
        ),
        (
            {"id": "h", "type": "http_request", "config": {"url": "u", "verb": "GET"}},
            "nodes[3].config.verb",
        ),
        ({"id": "d", "type": "delay", "config": {}}, "nodes[3].config.seconds"),
        ({"id": "d", "type": "delay", "config": {"seconds": -1}}, "nodes[3].config.seconds"),
        ({"id": "d", "type": "delay", "config": {"seconds": "5"}}, "nodes[3].config.seconds"),
        ({"id": "c", "type": "condition", "config": {}}, "nodes[3].config.conditions"),
        (
            {"id": "c", "type": "condition", "config": {"conditions": []}},
            "nodes[3].config.conditions",
        ),
        (
            {
                "id": "c",
                "type": "condition",
                "config": {"conditions": [{"value": 1, "operator": "approx", "branch": "y"}]},
            },
            "nodes[3].config.conditions[0].operator",
        ),
        (
            {
                "id": "c",
                "type": "condition",
                "config": {"conditions": [{"value": 1, "operator": "eq"}]},
            },
            "nodes[3].config.conditions[0].branch",
        ),
        (
            {
                "id": "c",
                "type": "condition",
                "config": {
                    "conditions": [{"value": 1, "operator": "regex", "operand": "(", "branch": "y"}]
                },
            },
            "nodes[3].config.conditions[0].operand",
        ),
        ({"id": "t", "type": "transform", "config": {}}, "nodes[3].config"),
        (
            {"id": "t", "type": "transform", "config": {"remove": ["a..b"]}},
            "nodes[3].config.remove",
        ),
        (
            {"id": "t", "type": "transform", "config": {"set": {"a": 1}, "input": 5}},
            "nodes[3].config.input",
        ),
    ],
)
def test_missing_or_wrong_config_reported_at_field(node: dict[str, Any], path: str) -> None:
    raw = base()
    raw["nodes"].append(node)
    assert paths_of(raw) == [path]


def test_delay_seconds_may_be_an_expression() -> None:
    raw = base()
    raw["nodes"].append({"id": "d", "type": "delay", "config": {"seconds": "{{ trigger.s }}"}})
    assert parse_definition(raw).node("d").config == {"seconds": "{{ trigger.s }}"}


def test_bad_expression_reported_at_its_config_path() -> None:
    raw = load_example("fan-out-join.json")
    raw["nodes"][2]["config"]["set"]["total"] = "{{ sum([nodes.a.output.body.price, }}"
    raw["nodes"][0]["config"]["headers"] = {"Authorization": "Bearer {{ trigger.token"}
    problems = problems_of(raw)
    assert [p.path for p in problems] == [
        "nodes[0].config.headers.Authorization",
        "nodes[2].config.set.total",
    ]
    assert "sum(" in problems[1].message


def test_expression_naming_an_unknown_node() -> None:
    raw = base()
    raw["nodes"][2]["config"]["set"]["x"] = "{{ nodes.fecth.output.body }}"
    [problem] = problems_of(raw)
    assert problem.path == "nodes[2].config.set.x"
    assert "fecth" in problem.message


def test_branch_on_edge_from_non_condition() -> None:
    raw = base()
    raw["edges"][0]["branch"] = "yes"
    [problem] = problems_of(raw)
    assert problem.path == "edges[0].branch"
    assert "condition" in problem.message


def test_branch_the_condition_never_produces() -> None:
    raw = base()
    raw["edges"][1]["branch"] = "maybe"
    [problem] = problems_of(raw)
    assert problem.path == "edges[1].branch"
    assert "maybe" in problem.message


def test_default_branch_is_accepted_on_edges() -> None:
    raw = base()
    raw["nodes"].append({"id": "other", "type": "transform", "config": {"set": {"a": 1}}})
    raw["edges"].append({"source": "paid", "target": "other", "branch": "no"})
    edges = parse_definition(raw).edges
    assert [e.branch for e in edges if e.source == "paid"] == ["yes", "no"]


def test_duplicate_edge() -> None:
    raw = base()
    raw["edges"].append(dict(raw["edges"][1]))
    [problem] = problems_of(raw)
    assert problem.path == "edges[2]"
    assert "duplicate" in problem.message


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda r: (r["nodes"][2].update(id="1bad"), r["edges"][1].update(target="1bad")),
            "nodes[2].id",
        ),
        (lambda r: r["nodes"][0].update(retry={"max_attempts": 0}), "nodes[0].retry.max_attempts"),
        (lambda r: r["nodes"][0].update(retry={"backoff": 0.5}), "nodes[0].retry.backoff"),
        (lambda r: r["nodes"][0].update(timeout_s=0), "nodes[0].timeout_s"),
        (lambda r: r["nodes"][0].update(on_error="retry"), "nodes[0].on_error"),
        (lambda r: r["nodes"][0].update(colour="red"), "nodes[0].colour"),
        (lambda r: r["edges"][0].update(id="e1"), "edges[0].id"),
        (lambda r: r.update(name=""), "name"),
        (lambda r: r.update(trigger={"type": "email"}), "trigger.type"),
        (lambda r: r.update(trigger={"type": "schedule"}), "trigger.cron"),
        (lambda r: r.update(settings={"timeout_s": -5}), "settings.timeout_s"),
    ],
)
def test_field_errors_reported_at_their_path(change: Any, path: str) -> None:
    raw = base()
    change(raw)
    assert paths_of(raw) == [path]


def test_several_problems_reported_at_once() -> None:
    raw = base()
    raw["name"] = ""
    raw["nodes"][0]["type"] = "teleport"
    raw["nodes"][1]["retry"] = {"max_attempts": 1000}
    raw["nodes"][2]["config"] = {"set": {"total": "{{ ) }}"}}
    raw["nodes"].append({"id": "fetch", "type": "delay", "config": {"seconds": 1}})
    raw["edges"] += [
        {"source": "shape", "target": "nowhere"},
        {"source": "shape", "target": "paid"},
    ]
    paths = paths_of(raw)
    assert set(paths) == {
        "name",
        "nodes[0].type",
        "nodes[1].retry.max_attempts",
        "nodes[2].config.set.total",
        "nodes[3].id",
        "edges[2].target",
        "edges[3]",
    }
    assert len(paths) == len(set(paths))


def test_definition_invalid_is_a_value_error_with_json_problems() -> None:
    raw = base()
    raw["nodes"][0]["type"] = "nope"
    with pytest.raises(ValueError) as info:
        parse_definition(raw)
    error = info.value
    assert isinstance(error, DefinitionInvalid)
    assert [p.to_json() for p in error.problems][0]["path"] == "nodes[0].type"
    assert "nodes[0].type" in str(error)


def test_export_format_is_normalised_before_validation() -> None:
    definition = parse_definition(load_example("linkflow-export.json"))
    assert [n.type for n in definition.nodes] == [
        "http_request",
        "condition",
        "delay",
        "transform",
        "transform",
    ]
    assert definition.node("fetch").name == "Fetch order"


def test_problems_in_export_format_use_normalised_paths() -> None:
    raw = load_example("linkflow-export.json")
    raw["nodes"][0]["type"] = "action_send_sms"
    raw["edges"][0]["target"] = "nowhere"
    assert paths_of(raw) == ["nodes[0].type", "edges[0].target"]
