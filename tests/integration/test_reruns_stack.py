"""Re-runs and error workflows end to end, with the roles running (relay, projector, matching,
worker, callbacks) against the HTTP target: a failed execution re-run from its failed node
completes with its upstream node's output reused (the target sees that node called once), and a
failing execution starts its error workflow exactly once, even when the error-workflow consumer
replays the log from position 0 (every failure delivered a second time); the error workflow's
own failure starts nothing more. An execution timeout starts it too (no failed node); an error
workflow archived after the definition was saved is not started, and the refusal is counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from api import Api
from prometheus_client import REGISTRY
from stack import Roles, eventually, roles
from target import serve_target

from infra.eventlog import head_position
from infra.settings import Settings

# a counts its call at the target; b calls trigger.path (404 for "missing": it fails); c joins.
CHAIN = {
    "name": "counted chain",
    "nodes": [
        {
            "id": "a",
            "type": "http_request",
            "config": {"url": "{{ trigger.base_url }}/count/{{ trigger.key }}"},
        },
        {
            "id": "b",
            "type": "http_request",
            "config": {"url": "{{ trigger.base_url }}/{{ trigger.path }}"},
        },
        {
            "id": "c",
            "type": "transform",
            "config": {
                "set": {
                    "key": "{{ nodes.a.output.body.key }}",
                    "price": "{{ nodes.b.output.body.price }}",
                }
            },
        },
    ],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
}


@pytest.fixture
async def stack(fresh_settings: Settings) -> AsyncIterator[tuple[Roles, str]]:
    async with (
        serve_target() as base,
        roles(
            fresh_settings, "relay", "projector", "matching", "worker", "timers", "callbacks"
        ) as r,
    ):
        yield r, base


async def counts(api: Api, base: str) -> dict[str, int]:
    async with api.session.get(f"{base}/counts") as resp:
        found: dict[str, int] = await resp.json()
        return found


async def test_a_failed_execution_rerun_from_its_failed_node_completes(
    api: Api, stack: tuple[Roles, str]
) -> None:
    _, base = stack
    workflow = await api.create_workflow(CHAIN)
    started = await api.start(workflow["id"], {"base_url": base, "key": "k1", "path": "missing"})
    original = await api.wait_terminal(started["execution_id"])
    assert original["status"] == "failed" and original["error"]["node_id"] == "b"
    assert (await counts(api, base))["k1"] == 1

    fixed = {"base_url": base, "key": "k1", "path": "price/abcd"}
    reply = await api.call(
        "POST",
        api.ws(f"/executions/{original['id']}/rerun"),
        json={"from_node": "b", "input": fixed},
    )
    assert reply.status == 202, reply.body
    new = await api.wait_terminal(reply.body["execution_id"])
    assert (new["status"], new["rerun_of"]) == ("completed", original["id"])
    assert new["output"] == {"key": "k1", "price": 4}
    runs = {n["id"]: n for n in new["nodes"]}
    assert runs["a"]["reused"] and runs["a"]["output"] == original_output(original, "a")
    assert not runs["b"]["reused"] and runs["b"]["attempts"] == 1
    assert (await counts(api, base))["k1"] == 1  # a was not run again


def original_output(execution: dict[str, Any], node_id: str) -> Any:
    return next(n["output"] for n in execution["nodes"] if n["id"] == node_id)


async def error_workflow_runs(api: Api, position: int = 0) -> list[dict[str, Any]]:
    reply = await api.call(
        "GET", api.ws("/executions"), q="trigger = 'error_workflow'", min_position=position
    )
    assert reply.status == 200, reply.body
    items: list[dict[str, Any]] = reply.body["items"]
    return items


async def test_a_failing_execution_starts_its_error_workflow_exactly_once(
    api: Api, stack: tuple[Roles, str]
) -> None:
    r, base = stack
    # The handler records what it was told, then fails itself; it is its own error workflow,
    # so only the trigger stops a second start.
    handler_definition = {
        "name": "on failure",
        "nodes": [
            {
                "id": "note",
                "type": "transform",
                "config": {
                    "set": {
                        "failed": "{{ trigger.execution.id }}",
                        "node": "{{ trigger.execution.failed_node }}",
                        "workflow": "{{ trigger.workflow.name }}",
                    }
                },
            },
            {"id": "fail", "type": "http_request", "config": {"url": f"{base}/missing"}},
        ],
        "edges": [{"source": "note", "target": "fail"}],
    }
    handler = await api.create_workflow(handler_definition)
    handler_definition["settings"] = {"error_workflow_id": handler["id"]}
    assert (
        await api.call("PUT", api.ws(f"/workflows/{handler['id']}"), json=handler_definition)
    ).status == 200
    failing = dict(CHAIN, name="failing", settings={"error_workflow_id": handler["id"]})
    workflow = await api.create_workflow(failing)
    started = await api.start(workflow["id"], {"base_url": base, "key": "k2", "path": "missing"})
    assert (await api.wait_terminal(started["execution_id"]))["status"] == "failed"

    [run] = await eventually(lambda: error_workflow_runs(api))
    run = await api.wait_terminal(run["id"])
    assert run["workflow_id"] == handler["id"] and run["status"] == "failed"
    assert run["input"]["execution"]["id"] == started["execution_id"]
    assert run["input"]["execution"]["failed_node"] == "b"
    assert run["input"]["execution"]["error"]["node_id"] == "b"
    assert run["input"]["workflow"] == {"id": workflow["id"], "name": "failing"}
    assert original_output(run, "note") == {
        "failed": started["execution_id"],
        "node": "b",
        "workflow": "failing",
    }

    # Every failure delivered again: the consumer replays the log from position 0.
    c = r.container
    await r.stop("callbacks")
    async with c.pool.connection() as conn:
        await conn.execute(
            "UPDATE consumer_positions SET position = 0 WHERE consumer = 'error_workflows'"
        )
        head = await head_position(conn)
        await conn.commit()
    r.start("callbacks")

    async def replayed() -> bool:
        async with c.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT position FROM consumer_positions WHERE consumer = 'error_workflows'"
            )
            row = await cur.fetchone()
            await conn.commit()
        return bool(row and row["position"] >= head)

    await eventually(replayed)
    async with c.pool.connection() as conn:
        now = await head_position(conn)
        await conn.commit()
    assert [e["id"] for e in await error_workflow_runs(api, now)] == [run["id"]]


def refused(reason: str) -> float:
    """linkflow_error_workflows_refused_total{reason} in this process (the roles run here)."""
    name = "linkflow_error_workflows_refused_total"
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


async def consumed_past(r: Roles, position: int) -> bool:
    async with r.container.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT position FROM consumer_positions WHERE consumer = 'error_workflows'"
        )
        row = await cur.fetchone()
        await conn.commit()
    return bool(row and row["position"] >= position)


async def test_a_timeout_starts_it_and_an_archived_one_is_counted_not_started(
    api: Api, stack: tuple[Roles, str]
) -> None:
    r, base = stack
    pure = {"name": "h", "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}]}
    handler = await api.create_workflow(pure)
    slow = {
        "name": "slow",
        "nodes": [{"id": "s", "type": "http_request", "config": {"url": f"{base}/slow"}}],
        "settings": {"timeout_s": 0.5, "error_workflow_id": handler["id"]},
    }
    workflow = await api.create_workflow(slow)
    started = await api.start(workflow["id"], {})
    assert (await api.wait_terminal(started["execution_id"]))["status"] == "timed_out"
    [run] = await eventually(lambda: error_workflow_runs(api))
    assert run["input"]["execution"]["failed_node"] is None
    assert run["input"]["execution"]["error"]["type"] == "timeout"

    archived = await api.create_workflow(dict(pure, name="archived"))
    failing = dict(CHAIN, name="failing", settings={"error_workflow_id": archived["id"]})
    failing_wf = await api.create_workflow(failing)
    assert (await api.call("DELETE", api.ws(f"/workflows/{archived['id']}"))).status == 200
    before = refused("archived")
    failed = await api.start(failing_wf["id"], {"base_url": base, "key": "k3", "path": "missing"})
    assert (await api.wait_terminal(failed["execution_id"]))["status"] == "failed"
    async with r.container.pool.connection() as conn:
        head = await head_position(conn)
        await conn.commit()
    await eventually(lambda: consumed_past(r, head))
    assert refused("archived") == before + 1
    assert [e["id"] for e in await error_workflow_runs(api, head)] == [run["id"]]
