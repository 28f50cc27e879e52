"""Unit tests for domain.json_limits: nesting depth with the path of the first offender, and the
compact-JSON size that stops early, both without recursion."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from domain.json_limits import json_size, too_deep


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# ---------------------------------------------------------------- too_deep


@pytest.mark.parametrize("scalar", [None, 1, 2.5, True, "text", ""])
def test_scalars_have_no_depth(scalar: Any) -> None:
    assert too_deep(scalar, 1) is None
    assert too_deep(scalar, 0) is None


def test_the_top_level_container_is_depth_one() -> None:
    assert too_deep({}, 1) is None
    assert too_deep([1, "a"], 1) is None
    assert too_deep([[1]], 1) == "[0]"
    assert too_deep([[1]], 2) is None
    assert too_deep({"a": 1}, 0) == ""


def test_exactly_at_the_limit_is_accepted_one_more_is_not() -> None:
    assert too_deep(nested_lists(64), 64) is None
    assert too_deep(nested_lists(65), 64) == "[0]" * 64


def test_path_names_keys_and_indexes_like_nul_path() -> None:
    document = {"input": {"a": [0, 1, 2, {"b": {"c": [1]}}]}}
    # depths: document 1, input 2, a 3, a[3] 4, b 5, c 6
    assert too_deep(document, 6) is None
    assert too_deep(document, 5) == "input.a[3].b.c"
    assert too_deep(document, 3) == "input.a[3]"
    assert too_deep([{"k": [[]]}], 3) == "[0].k[0]"


def test_the_first_offender_in_document_order() -> None:
    document = {"shallow": [1], "first": [[[1]]], "second": [[[2]]]}
    assert too_deep(document, 3) == "first[0][0]"
    assert too_deep([[1], [[[2]]], [[[3]]]], 3) == "[1][0][0]"


def test_deep_siblings_after_a_shallow_one_are_found() -> None:
    document = {"a": {"b": 1}, "z": nested_lists(10)}
    assert too_deep(document, 5) == "z" + "[0]" * 4


def test_a_hundred_thousand_levels_raise_no_recursion_error() -> None:
    deep = nested_lists(100_000)
    assert too_deep(deep, 64) == "[0]" * 64
    assert too_deep(deep, 200_000) is None
    assert json_size(deep, 10**9) == 2 * 100_000
    assert json_size(deep, 1_000) > 1_000
    wrapped: dict[str, Any] = {"x": None}
    for _ in range(100_000):
        wrapped = {"x": wrapped}
    assert too_deep(wrapped, 100) == ".".join(["x"] * 100)
    assert json_size(wrapped, 10**9) == compact_depth_of_x(100_001)


def test_shared_references_are_measured_without_walking_the_tree() -> None:
    """Ten references to the same list on each of 30 levels: 10^30 containers as a tree."""
    value: Any = "s"
    for _ in range(30):
        value = [value] * 10
    started = time.perf_counter()
    assert too_deep(value, 30) is None
    assert too_deep(value, 29) == "[0]" * 29
    # the offender after the shared tree in document order
    assert too_deep([value, nested_lists(40)], 35) == "[1]" + "[0]" * 34
    assert time.perf_counter() - started < 0.5


def compact_depth_of_x(objects: int) -> int:
    # {"x":{"x":…{"x":null}…}}: each object is `{"x":` + `}` = 6 bytes, and the null 4.
    return objects * 6 + 4


# ---------------------------------------------------------------- json_size


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -17,
        12345678901234567890,
        1.5,
        -0.25,
        1e300,
        "",
        "plain",
        'quote " and backslash \\',
        "new\nline\ttab\r\b\f and \x01 control",
        "é ünïcödé 日本語 🎉",
        [],
        {},
        [1, "a", None, [True, {"k": "v"}]],
        {"a": {"b": [1, 2, {"c": "d"}]}, "é": "ü", "": ""},
        {"nested": [[[]]], "n": [1.25, -3, 0]},
    ],
)
def test_size_is_the_compact_json_length_in_bytes(value: Any) -> None:
    assert json_size(value, 10**9) == compact(value)


def test_non_string_keys_count_as_json_writes_them() -> None:
    value = {1: "a", False: "b", None: "c", 2.5: "d"}
    assert json_size(value, 10**9) == compact(value)


def test_shared_references_count_each_time() -> None:
    text = "x" * 100
    value = [text] * 10
    assert json_size(value, 10**9) == compact(value) == 10 * 102 + 11
    inner = {"k": text}
    assert json_size([inner, inner, inner], 10**9) == compact([inner, inner, inner])


def test_within_the_limit_is_exact_past_it_is_over() -> None:
    value = {"a": "x" * 50}
    size = compact(value)
    assert json_size(value, size) == size
    assert json_size(value, size - 1) > size - 1


def test_stops_early_on_a_repeated_megabyte_string() -> None:
    """A list holding the same 1 MB string 10 times counts 10 MB, and stops at the first."""
    big = "y" * 1_000_000
    value = [big] * 10
    assert json_size(value, 10**9) == 10 * 1_000_002 + 11
    started = time.perf_counter()
    for _ in range(1000):
        assert json_size(value, 1_000) > 1_000
    assert time.perf_counter() - started < 0.5  # 1000 calls: no MB-sized work each


def test_stops_early_on_shared_amplification() -> None:
    """Ten references at each of seven levels: 10^7 strings as JSON (~1 GB), ~100 objects in
    memory. Counting to the limit walks about `limit` bytes' worth, not the whole value."""
    value: Any = "s" * 100
    for _ in range(7):
        value = [value] * 10
    started = time.perf_counter()
    size = json_size(value, 1024 * 1024)
    assert size > 1024 * 1024
    assert time.perf_counter() - started < 1.0
    assert json_size(value, 10_000) < 10_000 + 200  # stops right after passing it


def test_a_long_list_past_the_limit_is_refused_before_it_is_walked() -> None:
    value = list(range(1_000_000))
    started = time.perf_counter()
    for _ in range(1000):
        assert json_size(value, 100) > 100
    assert time.perf_counter() - started < 0.5
