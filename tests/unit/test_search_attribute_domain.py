"""Search attributes in the domain (`domain/search_attributes.py`, `Execution.start`, the
definition's `settings.search_attributes`, the start command): types, limits, derivation from
templates, and what `ExecutionStarted` records. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from commands.models import StartExecution
from domain.definition import DefinitionInvalid, parse_definition
from domain.execution import Execution
from domain.search_attributes import (
    MAX_ATTRIBUTES,
    MAX_TEXT_LENGTH,
    AttributeType,
    SearchAttributeError,
    check_attributes,
    derive,
    parse_time,
    type_of,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("eu", AttributeType.TEXT),
        ("2026-11-01", AttributeType.TIME),
        ("2026-11-01T08:30:00Z", AttributeType.TIME),
        ("2026-11-01 08:30:00+02:00", AttributeType.TIME),
        ("2026-13-01", AttributeType.TEXT),  # not a date: text
        ("2026", AttributeType.TEXT),
        (3, AttributeType.INT),
        (2.5, AttributeType.NUMBER),
        (True, AttributeType.BOOL),
    ],
)
def test_a_values_type_is_read_from_the_value(value: Any, kind: AttributeType) -> None:
    assert type_of(value) is kind


def test_a_time_without_an_offset_is_utc() -> None:
    assert parse_time("2026-11-01T08:30") == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "null is not a search attribute value"),
        ({"a": 1}, "an object is not"),
        ([1], "an array is not"),
        (2**63, "64-bit"),
        (float("inf"), "finite"),
        ("x" * (MAX_TEXT_LENGTH + 1), f"longer than {MAX_TEXT_LENGTH}"),
        ("a\x00b", "NUL"),
    ],
)
def test_what_cannot_be_a_search_attribute(value: Any, fragment: str) -> None:
    with pytest.raises(SearchAttributeError) as caught:
        type_of(value)
    assert fragment in str(caught.value)


def test_names_and_count_are_checked() -> None:
    assert check_attributes({"region": "eu", "n_2": 1}) == {"region": "eu", "n_2": 1}
    for bad in ("Region", "2x", "a-b", "x" * 41, ""):
        with pytest.raises(SearchAttributeError, match=r"\[a-z\]"):
            check_attributes({bad: 1})
    with pytest.raises(SearchAttributeError, match=f"at most {MAX_ATTRIBUTES}"):
        check_attributes({f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)})
    with pytest.raises(SearchAttributeError) as caught:
        check_attributes({"ok": 1, "payload": {"x": 1}})
    assert caught.value.name == "payload"


def test_the_start_command_refuses_a_bad_attribute_naming_it() -> None:
    with pytest.raises(ValidationError) as caught:
        StartExecution(
            workspace_id=uuid4(), workflow_id=uuid4(), search_attributes={"region": ["eu"]}
        )
    assert "region: an array is not" in str(caught.value)


def test_templates_are_rendered_given_values_win_and_failures_leave_the_attribute_unset() -> None:
    context = {"trigger": {"customer": "acme", "total": 12.5, "vip": True}}
    templates = {
        "customer": "{{ trigger.customer }}",
        "total": "{{ trigger.total }}",
        "label": "order of {{ trigger.customer }}",
        "vip": "{{ trigger.vip }}",
        "missing": "{{ trigger.nothing }}",
        "nested": "{{ trigger }}",
        "region": "{{ trigger.region }}",
    }
    values, problems = derive(templates, context, {"region": "eu"})
    assert values == {
        "region": "eu",
        "customer": "acme",
        "total": 12.5,
        "label": "order of acme",
        "vip": True,
    }
    assert problems["missing"] == "the expression gave null"
    assert "an object is not" in problems["nested"]
    assert set(problems) == {"missing", "nested"}


def test_derived_attributes_stop_at_the_limit_after_the_given_ones() -> None:
    given = {f"g{i}": i for i in range(MAX_ATTRIBUTES)}
    values, problems = derive({"extra": "{{ trigger }}"}, {"trigger": 1}, given)
    assert values == given
    assert problems == {"extra": f"more than {MAX_ATTRIBUTES} search attributes"}


def _definition(settings: dict[str, Any]) -> dict[str, Any]:
    raw = {
        "name": "orders",
        "settings": settings,
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    }
    return parse_definition(raw).to_json()


def test_a_definition_checks_its_search_attribute_templates() -> None:
    ok = _definition({"search_attributes": {"customer": "{{ trigger.customer }}"}})
    assert ok["settings"]["search_attributes"] == {"customer": "{{ trigger.customer }}"}
    for bad, fragment in (
        ({"Customer": "{{ trigger.c }}"}, "[a-z]"),
        ({"customer": 3}, "must be a string"),
        ({"customer": "{{ trigger.c "}, "customer:"),
    ):
        with pytest.raises(DefinitionInvalid) as caught:
            _definition({"search_attributes": bad})
        assert fragment in str(caught.value.problems), caught.value.problems


def test_the_start_records_given_and_derived_attributes_in_execution_started() -> None:
    definition = _definition(
        {
            "search_attributes": {
                "customer": "{{ trigger.customer }}",
                "env": "{{ vars.env }}",
                "wf": "{{ execution.workflow_id }}",
                "broken": "{{ trigger.customer.name }}",
            }
        }
    )
    execution = Execution.start(
        uuid4(),
        str(uuid4()),
        "wf-1",
        1,
        definition,
        {"customer": "acme"},
        NOW,
        vars={"env": "prod"},
        search_attributes={"priority": 2},
    )
    started = execution.pending_events[0]
    assert isinstance(started, Execution.ExecutionStarted)
    assert started.search_attributes == {
        "priority": 2,
        "customer": "acme",
        "env": "prod",
        "wf": "wf-1",
    }
    assert execution.search_attributes == started.search_attributes
    assert [name for name, _ in execution.search_attribute_problems] == ["broken"]


def test_an_execution_started_before_search_attributes_has_none() -> None:
    """Replaying an ExecutionStarted recorded without the field gives an empty mapping."""
    execution = Execution.start(uuid4(), str(uuid4()), "wf", 1, _definition({}), None, NOW)
    started = execution.pending_events[0]
    state = dict(started.__dict__)
    del state["search_attributes"]
    old = object.__new__(Execution.ExecutionStarted)
    old.__dict__.update(state)
    replayed = old.mutate(None)
    assert replayed is not None and replayed.search_attributes == {}
