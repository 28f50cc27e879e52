"""Bounds on JSON-like values: how deeply they nest (`too_deep`) and how many bytes their compact
JSON encoding takes (`json_size`), both computed by iterative walks, so that no value, however
deep, makes them raise RecursionError, and `json_size` stops as soon as it knows the answer is
over the limit.

Pure (stdlib only, no I/O). Everything may import it: the domain (expressions, definitions),
commands, the engine and the gateways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["footprint", "json_size", "too_deep"]

# Characters json.dumps escapes in a string (ensure_ascii=False): the quote, the backslash and
# the control characters.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_LOG10_2 = 0.30103


def _containers(value: Any) -> Iterator[tuple[Any, bool, Any]]:
    """(key or index, is an index, child) for each child of `value` that is itself a container,
    in document order."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list | tuple):
                yield key, False, item
    else:
        for i, item in enumerate(value):
            if isinstance(item, dict | list | tuple):
                yield i, True, item


def _path(steps: list[tuple[Any, bool]]) -> str:
    """`a.b`, `a[3]`, `[3]` — the path style of `gateways.http.errors.nul_path`."""
    path = ""
    for key, index in steps:
        if index:
            path = f"{path}[{key}]"
        else:
            path = f"{path}.{key}" if path else str(key)
    return path


_CONTAINERS = (dict, list, tuple)


def _depth_within(value: Any, max_depth: int) -> bool:
    """Whether `value` (a container) nests at most `max_depth` levels: a walk level by level,
    the children of a whole level gathered by comprehensions (fast; no paths). A container
    referenced several times on one level is walked once (values built by expressions share
    references: ten of the same list on each of seven levels are 10^7 as a tree)."""
    level: list[Any] = [value]
    depth = 1
    while True:
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, _CONTAINERS)]
        if not below:
            return True
        depth += 1
        if depth > max_depth:
            return False
        level = list({id(child): child for child in below}.values())


def too_deep(value: Any, max_depth: int) -> str | None:
    """The path of the first container (in document order) nested deeper than `max_depth`
    levels, else None. The top-level object or array is at depth 1, so ``[[1]]`` is 2 deep;
    scalars are not levels. Paths look like ``a.b[3].c`` ("" is the value itself)."""
    if not isinstance(value, _CONTAINERS):
        return None
    if max_depth < 1:
        return ""
    if _depth_within(value, max_depth):
        return None
    # Too deep: find the first offender in document order (the slower walk, only then).
    # stack[i]: the container at depth i + 1 and its children left to visit; steps[i]: the key
    # leading from it to the container at depth i + 2 being visited. `clean`: the deepest
    # level at which a container was walked without an offender (no need to walk it again at
    # that level or above, when it is referenced several times).
    stack: list[tuple[Any, Iterator[tuple[Any, bool, Any]]]] = [(value, _containers(value))]
    steps: list[tuple[Any, bool]] = []
    clean: dict[int, int] = {}
    while stack:
        for key, index, child in stack[-1][1]:
            depth = len(stack) + 1
            if depth > max_depth:
                return _path([*steps, (key, index)])
            if clean.get(id(child), 0) >= depth:
                continue
            steps.append((key, index))
            stack.append((child, _containers(child)))
            break
        else:
            container, _ = stack.pop()
            clean[id(container)] = max(clean.get(id(container), 0), len(stack) + 1)
            if steps:
                steps.pop()
    return None


def _str_size(text: str, remaining: int) -> int:
    """Bytes of `text` as a JSON string (quotes included); a lower bound past `remaining`."""
    size = len(text) + 2  # UTF-8 takes at least a byte per character
    if size > remaining:
        return size
    if _NEEDS_ESCAPE.search(text) is not None:
        text = json.dumps(text, ensure_ascii=False)[1:-1]
    if text.isascii():
        return len(text) + 2
    return len(text.encode("utf-8", "surrogatepass")) + 2


def _int_size(number: int) -> int:
    if -(10**15) < number < 10**15:
        return len(str(number))
    # str() of a huge int is slow (and refused past sys.get_int_max_str_digits()): estimate.
    return int(abs(number).bit_length() * _LOG10_2) + 1 + (number < 0)


def json_size(value: Any, limit: int) -> int:
    """The length in bytes of `value` as compact JSON (``separators=(",", ":")``,
    ``ensure_ascii=False``), walking at most about `limit` bytes' worth: once the count passes
    `limit` it stops and returns that count (> limit), so the cost is O(min(size, limit)).
    A value referenced several times counts each time it appears (as JSON would repeat it).
    Values JSON does not know (datetimes, UUIDs…) count as the string of their ``str()``."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += _str_size(item, limit - total)
        elif item is None or item is True:
            total += 4
        elif item is False:
            total += 5
        elif isinstance(item, int):
            total += _int_size(item)
        elif isinstance(item, float):
            total += _float_size(item)
        elif isinstance(item, dict):
            count = len(item)
            total += 2 + 2 * count - (1 if count else 0)  # braces, colons, commas
            if total > limit:
                return total
            for key, child in item.items():
                total += _str_size(key if isinstance(key, str) else _key_text(key), limit - total)
                if total > limit:
                    return total
                stack.append(child)
        elif isinstance(item, list | tuple):
            count = len(item)
            total += 1 + count if count else 2  # brackets and commas
            if total > limit:
                return total
            stack.extend(item)
        else:
            total += _str_size(str(item), limit - total)
        if total > limit:
            return total
    return total


def _float_size(number: float) -> int:
    if number != number:
        return 3  # NaN
    if number in (_INF, -_INF):
        return 8 if number > 0 else 9  # Infinity, -Infinity
    return len(repr(number))


_INF = float("inf")


def _key_text(key: Any) -> str:
    """How json.dumps writes a non-string key."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    return str(key)


def footprint(value: Any) -> int:
    """A quick estimate of the memory a decoded JSON value takes (its compact encoding's
    length, written by the C encoder, so much faster than `json_size` on large values): what
    the aggregate cache counts against its byte budget. A value the encoder refuses (too deep,
    say) counts 1 MiB."""
    try:
        return len(json.dumps(value, separators=(",", ":"), default=str))
    except (ValueError, TypeError, RecursionError):
        return 1024 * 1024
