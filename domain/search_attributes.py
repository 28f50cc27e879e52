"""Search attributes: the typed, indexed values an execution is found by (`attr.<name>` in the
`q` filter language). An execution gets them at its start, from the start request's
`search_attributes` and from its definition's `settings.search_attributes` templates
(`{name: "{{ expression }}"}`, evaluated against the trigger input, the workspace's variables and
the execution); a value given in the request wins over a derived one. `ExecutionStarted` records
the result, so replays and rebuilds reproduce them without evaluating anything again.

A value's type is read from the value itself (there is no registry to declare types in):
text, integer, number, boolean, or time — text in ISO-8601 form (`2026-11-01`,
`2026-11-01T08:00:00Z`; without an offset, UTC) is a time, in requests, templates and filters
alike. Null, objects and arrays are not search attributes.

Pure (stdlib only, plus `domain.expressions`). Imported by the domain, commands and projections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from domain.expressions import (
    DEFAULT_EXPRESSION_LIMITS,
    ExpressionError,
    ExpressionLimits,
    expression_errors,
    render,
)

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_TEXT_LENGTH",
    "NAME",
    "AttributeType",
    "SearchAttributeError",
    "check_attributes",
    "check_templates",
    "derive",
    "parse_time",
    "type_of",
]

MAX_ATTRIBUTES = 20
# A text value's length in characters (a longer one is a payload, not something to filter by).
MAX_TEXT_LENGTH = 256
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Integers within PostgreSQL's bigint.
_INT_RANGE = range(-(2**63), 2**63)
# A date, optionally with a time and an offset: what `parse_time` reads as a time.
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE,
)


class AttributeType(StrEnum):
    TEXT = "text"
    INT = "int"
    NUMBER = "number"
    BOOL = "bool"
    TIME = "time"


class SearchAttributeError(ValueError):
    """A search attribute that cannot be: its name, and what is wrong."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if name else message)
        self.name = name
        self.message = message


def parse_time(text: str) -> datetime | None:
    """`text` as a time if it is ISO-8601 (a date, or a date and time; no offset: UTC)."""
    if not _ISO_TIME.fullmatch(text):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def type_of(value: Any) -> AttributeType:
    """The type of a search attribute's value; SearchAttributeError('', why) if it cannot be one."""
    if isinstance(value, bool):
        return AttributeType.BOOL
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise SearchAttributeError("", "an integer outside the 64-bit range")
        return AttributeType.INT
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SearchAttributeError("", "a number must be finite")
        return AttributeType.NUMBER
    if isinstance(value, str):
        if parse_time(value) is not None:
            return AttributeType.TIME
        if len(value) > MAX_TEXT_LENGTH:
            raise SearchAttributeError("", f"text longer than {MAX_TEXT_LENGTH} characters")
        if "\x00" in value:
            raise SearchAttributeError("", "text with a NUL character")
        return AttributeType.TEXT
    kind = "null" if value is None else type(value).__name__
    kind = {"dict": "an object", "list": "an array"}.get(kind, kind)
    raise SearchAttributeError(
        "",
        f"{kind} is not a search attribute value (text, integer, number, boolean or ISO-8601 time)",
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SearchAttributeError(str(name), "a name matches [a-z][a-z0-9_]{0,39}")
    return name


def check_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` if every name and value is a search attribute's (at most MAX_ATTRIBUTES), else
    SearchAttributeError naming the first that is not."""
    if len(values) > MAX_ATTRIBUTES:
        raise SearchAttributeError("", f"at most {MAX_ATTRIBUTES} search attributes")
    for name, value in values.items():
        _check_name(name)
        try:
            type_of(value)
        except SearchAttributeError as exc:
            raise SearchAttributeError(name, exc.message) from None
    return dict(values)


def check_templates(templates: Mapping[str, Any]) -> dict[str, str]:
    """A definition's `settings.search_attributes` if well formed (names, count, each a string
    with well-formed `{{ }}`), else SearchAttributeError naming the first problem."""
    if len(templates) > MAX_ATTRIBUTES:
        raise SearchAttributeError("", f"at most {MAX_ATTRIBUTES} search attributes")
    for name, template in templates.items():
        _check_name(name)
        if not isinstance(template, str):
            raise SearchAttributeError(name, "must be a string such as '{{ trigger.customer }}'")
        for _, message in expression_errors(template):
            raise SearchAttributeError(name, message)
    return dict(templates)


def derive(
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    given: Mapping[str, Any],
    limits: ExpressionLimits = DEFAULT_EXPRESSION_LIMITS,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The execution's search attributes — `given`, then each other template rendered against
    `context`, MAX_ATTRIBUTES at most — and, by name, why a template gave none (its expression
    failed, or its value is null or not a search attribute's type). A failed template does not
    stop the start: the attribute is left unset."""
    values: dict[str, Any] = dict(given)
    problems: dict[str, str] = {}
    for name, template in templates.items():
        if name in given:
            continue
        if len(values) >= MAX_ATTRIBUTES:
            problems[name] = f"more than {MAX_ATTRIBUTES} search attributes"
            continue
        try:
            value = render(template, context, limits)
            if value is None:
                problems[name] = "the expression gave null"
                continue
            type_of(value)
        except (ExpressionError, SearchAttributeError) as exc:
            problems[name] = str(exc)
            continue
        values[name] = value
    return values, problems
