"""Evaluation of the side-effect-free node types (condition, transform) on a rendered config.

Domain: pure (no I/O, no clock, no asyncio). Imported by domain.definition, engine (node
executors) and tests. Configs reach these functions with their ``{{ }}`` expressions already
substituted (see domain.expressions.render).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from domain.expressions import ExpressionError, to_text

__all__ = [
    "CONDITION_OPERATORS",
    "MAX_REGEX_LENGTH",
    "NodeConfigError",
    "DEFAULT_BRANCH",
    "apply_transform",
    "check_operator",
    "evaluate_condition",
    "split_path",
]

MAX_REGEX_LENGTH = 512
DEFAULT_BRANCH = "else"

_NUMBER = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$")


class NodeConfigError(ExpressionError):
    """A node configuration that cannot be evaluated (unknown operator, bad regex, bad path).

    A subclass of ExpressionError (and so of ValueError): callers that turn expression errors
    into a failed node handle it the same way.
    """


def _number(value: Any) -> int | float | None:
    """The value as a number if it is numeric-ish (a number or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and _NUMBER.match(value):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = float(text)
            return None if math.isinf(number) else number
    return None


def _equals(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a == b
    return bool(left == right)


def _ordered(left: Any, right: Any, compare: Callable[[Any, Any], bool]) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return compare(a, b)
    if isinstance(left, str) and isinstance(right, str):
        return compare(left, right)
    return False


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return item is not None and to_text(item) in container
    if isinstance(container, list | tuple):
        return any(_equals(element, item) for element in container)
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_REGEX_LENGTH:
        raise NodeConfigError(f"regex longer than {MAX_REGEX_LENGTH} characters")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise NodeConfigError(f"invalid regex {pattern!r}: {exc}") from exc


def _regex(value: Any, operand: Any) -> bool:
    if not isinstance(operand, str):
        raise NodeConfigError("the regex operator needs a string operand (the pattern)")
    return _pattern(operand).search(to_text(value)) is not None


def _starts_with(value: Any, operand: Any) -> bool:
    return isinstance(value, str) and operand is not None and value.startswith(to_text(operand))


def _ends_with(value: Any, operand: Any) -> bool:
    return isinstance(value, str) and operand is not None and value.endswith(to_text(operand))


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equals,
    "ne": lambda v, o: not _equals(v, o),
    "gt": lambda v, o: _ordered(v, o, lambda a, b: a > b),
    "gte": lambda v, o: _ordered(v, o, lambda a, b: a >= b),
    "lt": lambda v, o: _ordered(v, o, lambda a, b: a < b),
    "lte": lambda v, o: _ordered(v, o, lambda a, b: a <= b),
    "contains": _contains,
    "not_contains": lambda v, o: not _contains(v, o),
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "in": lambda v, o: _contains(o, v),
    "not_in": lambda v, o: not _contains(o, v),
    "exists": lambda v, o: v is not None,
    "not_exists": lambda v, o: v is None,
    "is_empty": lambda v, o: _empty(v),
    "is_not_empty": lambda v, o: not _empty(v),
    "regex": _regex,
    "is_true": lambda v, o: _is_true(v),
    "is_false": lambda v, o: _is_false(v),
}

CONDITION_OPERATORS: frozenset[str] = frozenset(_OPERATORS)


def check_operator(operator: Any, value: Any, operand: Any) -> bool:
    """Apply one operator; raise NodeConfigError for an unknown one."""
    try:
        function = _OPERATORS[operator]
    except (KeyError, TypeError):
        raise NodeConfigError(f"unknown condition operator {operator!r}") from None
    return function(value, operand)


def evaluate_condition(config: Mapping[str, Any]) -> str:
    """The branch a condition node takes: the first true condition's, else the default.

    Operators: eq/ne (numeric strings equal their numbers), gt/gte/lt/lte (numbers, numeric
    strings, or two strings; anything else is False), contains/not_contains (substring, list
    element, dict key), starts_with/ends_with, in/not_in (value in the operand list/string/
    dict keys), exists/not_exists (not None), is_empty/is_not_empty (None, "", [], {}), regex
    (re.search of the pattern operand in the value's text), is_true/is_false (booleans or the
    strings "true"/"false").
    """
    conditions = config.get("conditions")
    if not isinstance(conditions, list | tuple):
        raise NodeConfigError("a condition node needs a list of conditions")
    for index, condition in enumerate(conditions):
        if not isinstance(condition, Mapping):
            raise NodeConfigError(f"conditions[{index}] is not an object")
        branch = condition.get("branch")
        if not isinstance(branch, str) or not branch:
            raise NodeConfigError(f"conditions[{index}] has no branch")
        if check_operator(
            condition.get("operator"), condition.get("value"), condition.get("operand")
        ):
            return branch
    default = config.get("default", DEFAULT_BRANCH)
    if default is None:
        return DEFAULT_BRANCH
    if not isinstance(default, str):
        raise NodeConfigError("the default branch must be a string")
    return default


def split_path(path: Any) -> list[str]:
    """The keys of a dotted path ("a.b.c"); raise NodeConfigError for an empty segment."""
    if not isinstance(path, str) or not path:
        raise NodeConfigError(f"invalid path {path!r}")
    keys = path.split(".")
    if any(not key for key in keys):
        raise NodeConfigError(f"invalid path {path!r}: empty segment")
    return keys


_MISSING = object()


def _get(data: Mapping[str, Any], keys: list[str]) -> Any:
    current: Any = data
    for key in keys:
        if not isinstance(current, Mapping) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set a nested key; a missing or non-object intermediate becomes an object."""
    current = data
    for key in keys[:-1]:
        child = current.get(key)
        if not isinstance(child, dict):
            child = {}
            current[key] = child
        current = child
    current[keys[-1]] = value


def _remove(data: dict[str, Any], keys: list[str]) -> None:
    parent = _get(data, keys[:-1]) if len(keys) > 1 else data
    if isinstance(parent, dict):
        parent.pop(keys[-1], None)


def _string_list(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise NodeConfigError(f"{key} must be a list of paths")
    return list(value)


def apply_transform(config: Mapping[str, Any]) -> dict[str, Any]:
    """The output of a transform node.

    Starts from a deep copy of ``input`` (an object, default {}); keeps only the ``pick``
    paths (if any), drops the ``remove`` paths, then applies ``set`` (dotted keys create
    nested objects, replacing non-object values on the way).
    """
    source = config.get("input")
    if source is None:
        source = {}
    if not isinstance(source, Mapping):
        raise NodeConfigError("transform input must be an object")
    result: dict[str, Any] = copy.deepcopy(dict(source))

    pick = _string_list(config, "pick")
    if pick:
        picked: dict[str, Any] = {}
        for path in pick:
            keys = split_path(path)
            value = _get(result, keys)
            if value is not _MISSING:
                _set(picked, keys, copy.deepcopy(value))
        result = picked

    for path in _string_list(config, "remove"):
        _remove(result, split_path(path))

    assignments = config.get("set") or {}
    if not isinstance(assignments, Mapping):
        raise NodeConfigError("transform set must be an object")
    for path, value in assignments.items():
        _set(result, split_path(path), copy.deepcopy(value))
    return result
