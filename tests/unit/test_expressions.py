"""Unit tests for domain.expressions: typed single expressions, interpolation, validation."""

from __future__ import annotations

from typing import Any

import pytest

from domain.expressions import ExpressionError, expression_errors, references, render, to_text

CTX: dict[str, Any] = {
    "trigger": {"base_url": "http://x", "order_id": 42, "flag": True, "none": None},
    "nodes": {
        "a": {"output": {"body": {"price": 3, "tags": ["x", "y"], "obj": {"k": 1}}}},
        "b": {"output": {"body": {"price": 6, "ratio": 0.5}}},
    },
    "vars": {"name": "Ada"},
    "execution": {"id": "ex-1"},
}


def test_interpolation_of_several_expressions() -> None:
    assert render("{{ trigger.base_url }}/orders/{{ trigger.order_id }}", CTX) == (
        "http://x/orders/42"
    )


def test_single_expression_keeps_int_type() -> None:
    result = render("{{ sum([nodes.a.output.body.price, nodes.b.output.body.price]) }}", CTX)
    assert result == 9
    assert isinstance(result, int)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ trigger.order_id }}", 42),
        ("  {{ trigger.flag }}  ", True),
        ("{{ trigger.none }}", None),
        ("{{ trigger.missing }}", None),
        ("{{ nodes.a.output.body.tags }}", ["x", "y"]),
        ("{{ nodes.a.output.body.obj }}", {"k": 1}),
        ("{{ nodes.b.output.body.ratio }}", 0.5),
        ("{{ {a: trigger.order_id}}}", {"a": 42}),
        ("{{ 'it\\'s' }}", "it's"),
    ],
)
def test_single_expression_returns_typed_value(template: str, expected: Any) -> None:
    assert render(template, CTX) == expected
    assert type(render(template, CTX)) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n={{ trigger.none }}", "n="),
        ("f={{ trigger.flag }}", "f=true"),
        ("r={{ nodes.b.output.body.ratio }}", "r=0.5"),
        ("t={{ nodes.a.output.body.tags }}", 't=["x","y"]'),
        ("o={{ nodes.a.output.body.obj }}", 'o={"k":1}'),
        ("hi {{ vars.name }}!", "hi Ada!"),
        ("{{ trigger.order_id }}{{ trigger.order_id }}", "4242"),
    ],
)
def test_interpolation_text_of_each_type(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


def test_to_text_false_and_plain_string() -> None:
    assert to_text(False) == "false"
    assert to_text("plain") == "plain"


def test_render_recurses_into_dict_values_and_lists_not_keys() -> None:
    template = {
        "{{ keep }}": "{{ trigger.order_id }}",
        "list": ["{{ vars.name }}", 1, None, {"deep": "id={{ execution.id }}"}],
        "n": 3.5,
        "b": False,
    }
    assert render(template, CTX) == {
        "{{ keep }}": 42,
        "list": ["Ada", 1, None, {"deep": "id=ex-1"}],
        "n": 3.5,
        "b": False,
    }


def test_non_string_scalars_returned_unchanged() -> None:
    for value in (1, 2.5, True, None):
        assert render(value, CTX) is value


def test_strings_without_expressions_unchanged() -> None:
    assert render('{"a": {"b": 1}}', CTX) == '{"a": {"b": 1}}'


def test_evaluation_error_names_the_expression() -> None:
    with pytest.raises(ExpressionError, match="sum\\(trigger.words\\)"):
        render("{{ sum(trigger.words) }}", {"trigger": {"words": ["a", "b"]}})


def test_render_raises_for_unparsable_and_unbalanced() -> None:
    with pytest.raises(ExpressionError, match="a\\."):
        render("{{ a. }}", CTX)
    with pytest.raises(ExpressionError, match="closing"):
        render("x {{ trigger.order_id", CTX)
    with pytest.raises(ExpressionError, match="unknown function"):
        render("{{ nope(trigger) }}", CTX)


def test_render_accepts_any_mapping_as_context() -> None:
    from types import MappingProxyType

    assert render("{{ vars.name }}", MappingProxyType(CTX)) == "Ada"


def test_expression_errors_paths_relative_to_template() -> None:
    template = {
        "headers": {"Authorization": "Bearer {{ trigger. }}"},
        "set": {"total": "{{ sum( }}", "ok": "{{ trigger.order_id }}"},
        "list": ["a", "b", "{{ }}"],
        "open": "{{ trigger.x",
    }
    paths = [path for path, _ in expression_errors(template)]
    assert paths == ["headers.Authorization", "set.total", "list[2]", "open"]


def test_expression_errors_root_and_list_paths() -> None:
    assert [p for p, _ in expression_errors("{{ a[ }}")] == [""]
    assert [p for p, _ in expression_errors(["ok", "{{ a ~ b }}"])] == ["[1]"]
    assert expression_errors({"a": "{{ length(trigger.x) }}", "b": 2, "c": "no braces"}) == []


def test_expression_errors_message_names_the_expression() -> None:
    [(path, message)] = expression_errors({"url": "{{ foo.[ }}"})
    assert path == "url"
    assert "foo.[" in message


def test_references_finds_root_node_ids_only() -> None:
    template = {
        "a": "{{ nodes.fetch.output.body }}",
        "b": ["{{ sum([nodes.x.output.p, nodes.y.output.p]) }}"],
        "c": "{{ items[*].nodes.not_root }}",
        "d": "{{ trigger.nodes }} and {{ broken( }}",
    }
    assert references(template) == {"fetch", "x", "y"}
