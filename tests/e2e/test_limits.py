"""Issue 12's limits over real HTTP against `linkflow run all` (its settings lowered where a
limit would otherwise need a body larger than the stack's 64 KiB): JSON nesting of workflow
definitions, start inputs and webhook bodies (422 `too_deep` naming the path, where they used
to answer 500 or be accepted), nodes per workflow, and a workspace's variables in total."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from api import Api, Reply, signed_up
from processes import Process

MAX_NODES = 50
MAX_VARIABLES_BYTES = 4096


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    return {
        "LINKFLOW_MAX_NODES": str(MAX_NODES),
        "LINKFLOW_MAX_VARIABLES_BYTES": str(MAX_VARIABLES_BYTES),
    }


@pytest.fixture
async def api(stack: tuple[str, Process]) -> AsyncIterator[Api]:
    async with signed_up(stack[0]) as client:
        yield client


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def transforms(count: int) -> dict[str, Any]:
    nodes = [
        {"id": f"n{i}", "type": "transform", "config": {"set": {"i": i}}} for i in range(count)
    ]
    return {"name": f"{count} nodes", "nodes": nodes}


def details_of(reply: Reply, code: str) -> list[dict[str, Any]]:
    assert reply.status == 422, (reply.status, reply.body)
    error = reply.body["error"]
    assert error["code"] == code, error
    return error["details"]


# ---------------------------------------------------------------- nesting


async def test_a_config_nested_260_levels_is_422_naming_its_path(api: Api) -> None:
    """The issue's 500 (pydantic's serialisation depth)."""
    definition = {
        "name": "deep",
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": nested(260)}}}],
    }
    reply = await api.call("POST", api.ws("/workflows"), json=definition)
    assert details_of(reply, "too_deep") == [
        {"path": "nodes[0].config.set.x" + "[0]" * 59, "message": "nested deeper than 64 levels"}
    ]
    workflow = await api.create_workflow(transforms(1))
    reply = await api.call("PUT", api.ws(f"/workflows/{workflow['id']}"), json=definition)
    assert details_of(reply, "too_deep")[0]["path"].startswith("nodes[0].config.set.x[0]")


@pytest.mark.parametrize("depth", [495, 900])
async def test_a_start_input_nested_hundreds_of_levels_is_422(api: Api, depth: int) -> None:
    """The issue: accepted, and then its history answered 500 for ever."""
    workflow = await api.create_workflow(transforms(1))
    path = api.ws(f"/workflows/{workflow['id']}/executions")
    reply = await api.call("POST", path, json={"input": nested(depth)})
    assert details_of(reply, "too_deep") == [
        {"path": "input" + "[0]" * 63, "message": "nested deeper than 64 levels"}
    ]
    listed = await api.call("GET", api.ws("/executions"), workflow_id=workflow["id"])
    assert listed.status == 200 and listed.body["items"] == []
    within = await api.start(workflow["id"], nested(60))  # 62 levels with the body's own two
    assert within["status"] == "completed"


async def test_a_webhook_body_of_495_nested_arrays_is_422_naming_the_body(api: Api) -> None:
    """The issue's 500 (RecursionError in deepcopy)."""
    definition = {
        "name": "hook",
        "trigger": {"type": "webhook"},
        "nodes": [
            {"id": "t", "type": "transform", "config": {"set": {"got": "{{ trigger.body }}"}}}
        ],
    }
    created = await api.create_workflow(definition)
    activated = await api.call("POST", api.ws(f"/workflows/{created['id']}/activate"))
    assert activated.status == 200, activated.body
    hook = created["webhook"]["path"]
    reply = await api.call("POST", hook, json=nested(495), token="")
    assert details_of(reply, "too_deep") == [
        {"path": "body" + "[0]" * 64, "message": "nested deeper than 64 levels"}
    ]
    deep = b"[" * 5000 + b"]" * 5000  # too deep for the parser itself
    reply = await api.call(
        "POST", hook, data=deep, headers={"Content-Type": "application/json"}, token=""
    )
    assert details_of(reply, "too_deep")[0]["path"] == "body"
    reply = await api.call("POST", hook, json=nested(63), token="")
    assert reply.status == 202, reply.body


# ---------------------------------------------------------------- nodes per workflow


async def test_more_nodes_than_the_limit_is_422_at_nodes(api: Api) -> None:
    reply = await api.call("POST", api.ws("/workflows"), json=transforms(MAX_NODES + 1))
    details = details_of(reply, "invalid_definition")
    assert details == [
        {
            "path": "nodes",
            "message": f"a workflow has at most {MAX_NODES} nodes; this one has {MAX_NODES + 1}",
        }
    ]
    workflow = await api.create_workflow(transforms(MAX_NODES))
    reply = await api.call(
        "PUT", api.ws(f"/workflows/{workflow['id']}"), json=transforms(MAX_NODES + 1)
    )
    assert details_of(reply, "invalid_definition")[0]["path"] == "nodes"


# ---------------------------------------------------------------- variables


async def test_variables_larger_than_the_limit_together_are_422_naming_value(api: Api) -> None:
    text = "v" * 3000  # a little over 3 KB as JSON: one fits, two do not
    first = await api.call("PUT", api.ws("/variables/first"), json={"value": text})
    assert first.status == 200, first.body
    second = await api.call("PUT", api.ws("/variables/second"), json={"value": text})
    [detail] = details_of(second, "too_large")
    assert detail["path"] == "value"
    assert str(MAX_VARIABLES_BYTES) in detail["message"]
    listed = await api.call("GET", api.ws("/variables"))
    assert listed.body == {"first": text}
    # replacing a value counts the new value instead of the old one
    smaller = await api.call("PUT", api.ws("/variables/first"), json={"value": "v" * 1000})
    assert smaller.status == 200, smaller.body
    second = await api.call("PUT", api.ws("/variables/second"), json={"value": "w" * 2000})
    assert second.status == 200, second.body
