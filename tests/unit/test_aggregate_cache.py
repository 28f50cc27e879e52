"""infra.aggregate_cache: the aggregate cache is bounded by bytes as well as by count."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.definition import parse_definition
from domain.execution import Execution
from infra.aggregate_cache import DEFAULT_FOOTPRINT, BoundedCache


@dataclass
class Held:
    footprint: int


def keys(cache: BoundedCache) -> list[str]:
    found = []
    for key in ("a", "b", "c", "d"):
        try:
            cache.get(key)
        except KeyError:
            continue
        found.append(key)
    return found


def test_the_least_recently_used_go_when_the_bytes_pass_the_budget() -> None:
    cache = BoundedCache(maxsize=100, max_bytes=1000)
    cache.put("a", Held(400))
    cache.put("b", Held(400))
    cache.get("a")  # used: b is now the oldest
    cache.put("c", Held(400))
    assert cache.bytes == 800
    assert keys(cache) == ["a", "c"]


def test_a_replaced_entry_is_weighed_again_and_an_evicted_one_no_longer_counts() -> None:
    cache = BoundedCache(maxsize=2, max_bytes=10_000)
    cache.put("a", Held(100))
    cache.put("a", Held(300))
    assert cache.bytes == 300
    cache.put("b", Held(100))
    cache.put("c", Held(100))  # past the count: a goes
    assert cache.bytes == 200
    cache.get("b", evict=True)
    assert cache.bytes == 100


def test_an_aggregate_larger_than_the_budget_alone_is_kept_while_in_use() -> None:
    cache = BoundedCache(maxsize=10, max_bytes=1000)
    cache.put("a", Held(100))
    cache.put("b", Held(5000))
    assert keys(cache) == ["b"]
    cache.put("c", object())
    assert cache.bytes == DEFAULT_FOOTPRINT


@pytest.mark.parametrize("payload", [1, 100_000])
def test_an_execution_counts_what_it_was_started_with_and_its_outputs(payload: int) -> None:
    definition = parse_definition(
        {"name": "x", "nodes": [{"id": "n", "type": "http_request", "config": {"url": "http://h"}}]}
    ).to_json()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ex = Execution.start(uuid4(), "ws", "wf", 1, definition, {"p": "x" * payload}, now)
    started = ex.footprint
    assert started > payload
    ex.complete_node("n", 1, {"body": "y" * 50_000}, now)
    assert ex.footprint - started > 50_000
