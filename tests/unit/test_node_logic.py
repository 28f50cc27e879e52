"""Unit tests for domain.node_logic: condition operators and transform pick/remove/set."""

from __future__ import annotations

from typing import Any

import pytest

from domain.expressions import ExpressionError
from domain.node_logic import (
    CONDITION_OPERATORS,
    NodeConfigError,
    apply_transform,
    evaluate_condition,
)

OPERATOR_CASES: list[tuple[Any, str, Any, bool]] = [
    ("paid", "eq", "paid", True),
    ("paid", "eq", "pending", False),
    ("42", "eq", 42, True),
    (42, "eq", 42.0, True),
    (True, "eq", 1, False),
    (None, "eq", None, True),
    ("a", "ne", "b", True),
    ("42", "ne", 42, False),
    (5, "gt", 3, True),
    ("10", "gt", "9", True),
    (3, "gt", 3, False),
    ("abc", "gt", 1, False),
    (None, "gt", 1, False),
    ({"a": 1}, "lt", 2, False),
    (3, "gte", 3, True),
    ("2.5", "lt", 3, True),
    (4, "lte", "3", False),
    ("2024-01-02", "gt", "2024-01-01", True),
    ("hello world", "contains", "world", True),
    (["a", "b"], "contains", "b", True),
    ([1, 2], "contains", "2", True),
    ({"k": 1}, "contains", "k", True),
    (None, "contains", "x", False),
    ("hello", "not_contains", "z", True),
    (["a"], "not_contains", "a", False),
    ("hello", "starts_with", "he", True),
    ("hello", "ends_with", "lo", True),
    (5, "starts_with", "5", False),
    ("b", "in", ["a", "b"], True),
    (2, "in", ["1", "2"], True),
    ("c", "in", ["a", "b"], False),
    ("c", "not_in", ["a", "b"], True),
    ("x", "in", None, False),
    (0, "exists", None, True),
    (None, "exists", None, False),
    (None, "not_exists", None, True),
    ("", "is_empty", None, True),
    ([], "is_empty", None, True),
    ({}, "is_empty", None, True),
    (None, "is_empty", None, True),
    (0, "is_empty", None, False),
    ("x", "is_not_empty", None, True),
    ("order-42", "regex", r"^order-\d+$", True),
    (42, "regex", r"^\d+$", True),
    ("abc", "regex", r"\d", False),
    (True, "is_true", None, True),
    ("true", "is_true", None, True),
    (1, "is_true", None, False),
    (False, "is_false", None, True),
    ("False", "is_false", None, True),
    (None, "is_false", None, False),
]


@pytest.mark.parametrize(("value", "operator", "operand", "expected"), OPERATOR_CASES)
def test_operator_table(value: Any, operator: str, operand: Any, expected: bool) -> None:
    config = {
        "conditions": [{"value": value, "operator": operator, "operand": operand, "branch": "hit"}],
        "default": "miss",
    }
    assert evaluate_condition(config) == ("hit" if expected else "miss")


def test_operator_table_covers_every_operator() -> None:
    assert {case[1] for case in OPERATOR_CASES} == CONDITION_OPERATORS


def test_first_true_condition_wins() -> None:
    config = {
        "conditions": [
            {"value": 1, "operator": "eq", "operand": 2, "branch": "first"},
            {"value": 1, "operator": "eq", "operand": 1, "branch": "second"},
            {"value": 1, "operator": "exists", "branch": "third"},
        ]
    }
    assert evaluate_condition(config) == "second"


def test_default_branch_is_else_when_not_given() -> None:
    config = {"conditions": [{"value": 1, "operator": "eq", "operand": 2, "branch": "yes"}]}
    assert evaluate_condition(config) == "else"


def test_unknown_operator_raises_node_config_error() -> None:
    config = {"conditions": [{"value": 1, "operator": "approx", "operand": 1, "branch": "y"}]}
    with pytest.raises(NodeConfigError, match="approx"):
        evaluate_condition(config)
    assert issubclass(NodeConfigError, ExpressionError)
    assert issubclass(NodeConfigError, ValueError)


def test_regex_pattern_too_long_or_invalid_raises() -> None:
    too_long = {
        "conditions": [{"value": "a", "operator": "regex", "operand": "a" * 513, "branch": "y"}]
    }
    with pytest.raises(NodeConfigError, match="512"):
        evaluate_condition(too_long)
    invalid = {"conditions": [{"value": "a", "operator": "regex", "operand": "(", "branch": "y"}]}
    with pytest.raises(NodeConfigError, match="regex"):
        evaluate_condition(invalid)


def test_transform_set_with_dotted_paths_creates_nested_objects() -> None:
    out = apply_transform({"set": {"order": 42, "customer.name": "Ada", "customer.tier": 2}})
    assert out == {"order": 42, "customer": {"name": "Ada", "tier": 2}}


def test_transform_pick_keeps_only_dotted_paths() -> None:
    source = {"id": 1, "user": {"name": "Ada", "email": "a@x"}, "extra": True}
    out = apply_transform({"input": source, "pick": ["id", "user.name", "missing.path"]})
    assert out == {"id": 1, "user": {"name": "Ada"}}


def test_transform_remove_drops_dotted_paths() -> None:
    source = {"id": 1, "user": {"name": "Ada", "password": "s"}, "token": "t"}
    out = apply_transform({"input": source, "remove": ["token", "user.password", "no.such"]})
    assert out == {"id": 1, "user": {"name": "Ada"}}


def test_transform_order_is_pick_then_remove_then_set() -> None:
    source = {"a": {"b": 1, "c": 2}, "d": 3}
    out = apply_transform(
        {"input": source, "pick": ["a"], "remove": ["a.c"], "set": {"a.c": "new", "e": 5}}
    )
    assert out == {"a": {"b": 1, "c": "new"}, "e": 5}


def test_transform_does_not_mutate_input_or_share_values() -> None:
    source = {"a": {"b": [1]}}
    shared = {"x": [1]}
    out = apply_transform({"input": source, "set": {"a.c": 1, "s": shared}})
    out["a"]["b"].append(2)
    out["s"]["x"].append(2)
    assert source == {"a": {"b": [1]}}
    assert shared == {"x": [1]}


def test_transform_set_replaces_non_object_intermediate() -> None:
    assert apply_transform({"input": {"a": 1}, "set": {"a.b": 2}}) == {"a": {"b": 2}}


def test_transform_without_input_starts_from_empty_object() -> None:
    assert apply_transform({"input": None, "set": {"k": None}}) == {"k": None}


def test_transform_rejects_non_object_input_and_empty_path_segments() -> None:
    with pytest.raises(NodeConfigError, match="input"):
        apply_transform({"input": [1, 2], "set": {"a": 1}})
    with pytest.raises(NodeConfigError, match="empty segment"):
        apply_transform({"set": {"a..b": 1}})
