"""The HTTP API of ../shared/API.md, driven over real HTTP against `linkflow run all`: identity,
workflows and their versions, executions (idempotency, filters, pagination, history, cancel),
error answers for bad input, and the operations endpoints."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from api import Api, Reply, signed_up
from examples import load_example
from processes import Process

# ---------------------------------------------------------------- definitions and helpers

TRANSFORM: dict[str, Any] = {
    "name": "t",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}}],
}


def transform(name: str, value: str) -> dict[str, Any]:
    """A one-node workflow whose output is `{"v": value}`."""
    return {
        "name": name,
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"v": value}}}],
    }


def delayed(seconds: float) -> dict[str, Any]:
    """Wait `seconds` on a durable timer, then output `{"x": trigger.x}`."""
    return {
        "name": f"wait {seconds}s",
        "nodes": [
            {"id": "wait", "type": "delay", "config": {"seconds": seconds}},
            {"id": "done", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}},
        ],
        "edges": [{"source": "wait", "target": "done"}],
    }


def error_of(reply: Reply, status: int, code: str) -> list[dict[str, Any]]:
    """Assert the contract's error answer `{"error": {code, message, details}}`; its details."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], list), error
    return error["details"]


def paths_of(details: list[dict[str, Any]]) -> list[str]:
    for entry in details:
        assert set(entry) == {"path", "message"} and entry["message"], entry
    return [entry["path"] for entry in details]


def nodes_by_id(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in execution["nodes"]}


async def get_ok(api: Api, path: str, **params: Any) -> Any:
    reply = await api.call("GET", path, **params)
    assert reply.status == 200, (reply.status, reply.body)
    return reply.body


def unsigned(api: Api) -> Api:
    """A client on the same server without a token."""
    return Api(api.base, api.session)


@pytest.fixture
async def other(stack: tuple[str, Process]) -> AsyncIterator[Api]:
    """A second user, with a session and workspace of their own."""
    async with signed_up(stack[0]) as client:
        yield client


@dataclass
class Accepted:
    """A workflow and a (still running) execution accepted before a test sends bad requests."""

    api: Api
    workflow: dict[str, Any]
    execution_id: str
    position: int

    async def assert_undisturbed(self) -> None:
        wf = self.workflow["id"]
        # Read our own writes: the projector may not have reached them yet.
        got = await get_ok(self.api, self.api.ws(f"/workflows/{wf}"), min_position=self.position)
        assert (got["version"], got["archived"]) == (1, False)
        assert got["definition"] == self.workflow["definition"]
        listed = await get_ok(self.api, self.api.ws("/workflows"))
        assert [w["id"] for w in listed] == [wf]  # nothing else was created
        done = await self.api.wait_terminal(self.execution_id)
        assert done["status"] == "completed", done
        assert done["output"] == {"x": "kept"}


@pytest.fixture
async def accepted(api: Api) -> Accepted:
    wf = await api.create_workflow(delayed(0.3))
    started = await api.start(wf["id"], {"x": "kept"})
    assert started["status"] == "running"
    return Accepted(api, wf, started["execution_id"], started["position"])


# ---------------------------------------------------------------- 1. identity


async def test_register_answers_the_user_and_a_personal_workspace(api: Api) -> None:
    email = f"new-{uuid.uuid4().hex[:10]}@example.com"
    reply = await unsigned(api).call(
        "POST", "auth/register", json={"email": email, "password": "long enough", "name": "Ada"}
    )
    assert reply.status == 201, reply.body
    user, workspace = reply.body["user"], reply.body["workspace"]
    assert user == {"id": user["id"], "email": email, "name": "Ada"}
    assert set(workspace) == {"id", "name"}
    assert uuid.UUID(user["id"]) and uuid.UUID(workspace["id"])
    assert isinstance(reply.body["position"], int) and reply.body["position"] > 0


async def test_register_with_a_taken_email_is_409_email_taken(api: Api) -> None:
    email = f"dup-{uuid.uuid4().hex[:10]}@example.com"
    client = unsigned(api)
    body = {"email": email, "password": "long enough", "name": "A"}
    assert (await client.call("POST", "auth/register", json=body)).status == 201
    error_of(await client.call("POST", "auth/register", json=body), 409, "email_taken")
    upper = body | {"email": email.upper(), "name": "B"}
    error_of(await client.call("POST", "auth/register", json=upper), 409, "email_taken")


async def test_login_answers_a_bearer_token_pair(api: Api) -> None:
    email = await unsigned(api).sign_up()
    reply = await api.call("POST", "auth/login", json={"email": email, "password": "correct horse"})
    assert reply.status == 200, reply.body
    assert reply.body["token_type"] == "Bearer"
    assert reply.body["access_token"] and reply.body["refresh_token"]
    assert isinstance(reply.body["expires_in"], int) and reply.body["expires_in"] > 0


async def test_login_with_a_wrong_password_or_unknown_email_is_401(api: Api) -> None:
    email = await unsigned(api).sign_up()
    wrong = {"email": email, "password": "wrong horse"}
    error_of(await api.call("POST", "auth/login", json=wrong), 401, "invalid_credentials")
    unknown = {"email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "correct horse"}
    error_of(await api.call("POST", "auth/login", json=unknown), 401, "invalid_credentials")


async def test_me_lists_the_personal_workspace_with_role_owner(api: Api) -> None:
    me = await get_ok(api, "me")
    assert set(me["user"]) == {"id", "email", "name"}
    assert me["user"]["email"].endswith("@example.com")
    assert [(w["id"], w["role"]) for w in me["workspaces"]] == [(api.workspace, "owner")]


async def test_created_workspace_appears_in_workspaces_and_me(api: Api) -> None:
    reply = await api.call("POST", "workspaces", json={"name": "Team"})
    assert reply.status == 201, reply.body
    created = reply.body
    assert (created["name"], created["role"]) == ("Team", "owner")
    assert reply.headers["Location"] == f"/api/v1/workspaces/{created['id']}"
    listed = await get_ok(api, "workspaces", min_position=created["position"])
    assert {"id": created["id"], "name": "Team", "role": "owner"} in listed
    assert {w["id"] for w in listed} == {api.workspace, created["id"]}
    me = await get_ok(api, "me")
    assert {"id": created["id"], "name": "Team", "role": "owner"} in me["workspaces"]
    # and it is usable
    wf = await api.call("POST", f"workspaces/{created['id']}/workflows", json=TRANSFORM)
    assert wf.status == 201, wf.body


async def test_no_token_is_401(api: Api) -> None:
    client = unsigned(api)
    for method, path in (("GET", "me"), ("GET", "workspaces"), ("GET", api.ws("/workflows"))):
        reply = await client.call(method, path)
        error_of(reply, 401, "unauthenticated")
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    error_of(
        await client.call("POST", api.ws("/workflows"), json=TRANSFORM), 401, "unauthenticated"
    )


async def test_garbage_token_is_401(api: Api) -> None:
    error_of(await api.call("GET", "me", token="garbage"), 401, "invalid_token")
    error_of(await api.call("GET", api.ws("/workflows"), token="a.b.c"), 401, "invalid_token")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    error_of(await unsigned(api).call("GET", "me", headers=basic), 401, "unauthenticated")


# ---------------------------------------------------------------- 2. workflows


async def test_create_workflow_is_version_1_and_inactive(api: Api) -> None:
    reply = await api.call("POST", api.ws("/workflows"), json=TRANSFORM)
    assert reply.status == 201, reply.body
    body = reply.body
    assert (body["name"], body["version"], body["active"]) == ("t", 1, False)
    uuid.UUID(body["id"])
    assert reply.headers["Location"] == f"/api/v1/{api.ws('/workflows/' + body['id'])}"
    assert body["position"] > 0


async def test_get_workflow_reads_its_own_write(api: Api) -> None:
    created = await api.create_workflow(TRANSFORM)
    got = await get_ok(api, api.ws(f"/workflows/{created['id']}"), min_position=created["position"])
    assert (got["id"], got["name"], got["version"], got["active"]) == (created["id"], "t", 1, False)
    assert got["definition"] == created["definition"]
    assert got["definition"]["nodes"][0]["config"] == TRANSFORM["nodes"][0]["config"]
    assert got["definition"]["trigger"] == {"type": "manual"}


async def test_list_workflows_contains_it(api: Api) -> None:
    first = await api.create_workflow(transform("first", "1"))
    second = await api.create_workflow(transform("second", "2"))
    listed = await get_ok(api, api.ws("/workflows"), min_position=second["position"])
    assert [(w["id"], w["name"]) for w in listed] == [
        (second["id"], "second"),
        (first["id"], "first"),
    ]


async def test_put_publishes_version_2_and_versions_are_immutable(api: Api) -> None:
    created = await api.create_workflow(transform("v", "one"))
    wf = created["id"]
    reply = await api.call("PUT", api.ws(f"/workflows/{wf}"), json=transform("v2", "two"))
    assert reply.status == 200, reply.body
    assert (reply.body["id"], reply.body["version"], reply.body["name"]) == (wf, 2, "v2")
    at = reply.body["position"]
    latest = await get_ok(api, api.ws(f"/workflows/{wf}"), min_position=at)
    assert latest["version"] == 2
    assert latest["definition"]["nodes"][0]["config"] == {"set": {"v": "two"}}
    versions = await get_ok(api, api.ws(f"/workflows/{wf}/versions"), min_position=at)
    assert [(v["version"], v["name"]) for v in versions] == [(1, "v"), (2, "v2")]
    old = await get_ok(api, api.ws(f"/workflows/{wf}/versions/1"), min_position=at)
    assert (old["workflow_id"], old["version"]) == (wf, 1)
    assert old["definition"] == created["definition"]
    new = await get_ok(api, api.ws(f"/workflows/{wf}/versions/2"))
    assert new["definition"]["nodes"][0]["config"] == {"set": {"v": "two"}}
    error_of(await api.call("GET", api.ws(f"/workflows/{wf}/versions/3")), 404, "not_found")


async def test_activate_and_deactivate_flip_active(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    on = await api.call("POST", api.ws(f"/workflows/{wf}/activate"))
    assert on.status == 200, on.body
    assert (on.body["active"], on.body["active_version"]) == (True, 1)
    got = await get_ok(api, api.ws(f"/workflows/{wf}"), min_position=on.body["position"])
    assert (got["active"], got["active_version"]) == (True, 1)
    off = await api.call("POST", api.ws(f"/workflows/{wf}/deactivate"))
    assert off.status == 200, off.body
    assert off.body["active"] is False
    got = await get_ok(api, api.ws(f"/workflows/{wf}"), min_position=off.body["position"])
    assert (got["active"], got["active_version"]) == (False, None)


async def test_activate_an_unknown_version_is_422(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    reply = await api.call("POST", api.ws(f"/workflows/{wf}/activate"), json={"version": 5})
    error_of(reply, 422, "unknown_version")


async def test_delete_archives_the_workflow(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    reply = await api.call("DELETE", api.ws(f"/workflows/{wf}"))
    assert reply.status == 200, reply.body
    assert reply.body["archived"] is True
    at = reply.body["position"]
    assert await get_ok(api, api.ws("/workflows"), min_position=at) == []
    everything = await get_ok(api, api.ws("/workflows"), include_archived="true", min_position=at)
    assert [(w["id"], w["archived"]) for w in everything] == [(wf, True)]
    still = await get_ok(api, api.ws(f"/workflows/{wf}"))  # its history stays
    assert still["archived"] is True
    start = await api.call("POST", api.ws(f"/workflows/{wf}/executions"), json={"input": {}})
    error_of(start, 409, "archived")
    error_of(await api.call("PUT", api.ws(f"/workflows/{wf}"), json=TRANSFORM), 409, "archived")


async def test_linkflow_export_format_is_accepted_and_normalised(api: Api) -> None:
    created = await api.create_workflow(load_example("linkflow-export.json"))
    got = await get_ok(api, api.ws(f"/workflows/{created['id']}"), min_position=created["position"])
    definition = got["definition"]
    assert got["name"] == "Order follow-up (LinkFlow export)"
    assert definition["trigger"] == {"type": "manual"}
    assert {n["id"]: n["type"] for n in definition["nodes"]} == {
        "fetch": "http_request",
        "paid": "condition",
        "wait": "delay",
        "shape": "transform",
        "unpaid": "transform",
    }
    nodes = {n["id"]: n for n in definition["nodes"]}
    assert nodes["fetch"]["config"]["url"] == "{{ trigger.base_url }}/orders/{{ trigger.order_id }}"
    assert nodes["wait"]["config"] == {"seconds": 1}
    assert nodes["paid"]["config"]["conditions"] == [
        {
            "value": "{{ nodes.fetch.output.body.status }}",
            "operator": "eq",
            "operand": "paid",
            "branch": "yes",
        }
    ]
    assert {"source": "paid", "target": "wait", "branch": "yes"} in definition["edges"]
    for node in definition["nodes"]:
        assert "data" not in node and "position" not in node
    assert "viewport" not in definition and "trigger_type" not in definition


# ---------------------------------------------------------------- 3. executions


async def test_start_with_version_runs_that_version(api: Api) -> None:
    wf = (await api.create_workflow(transform("v", "one")))["id"]
    put = await api.call("PUT", api.ws(f"/workflows/{wf}"), json=transform("v", "two"))
    assert put.status == 200 and put.body["version"] == 2, put.body
    old = await api.start(wf, {}, version=1)
    latest = await api.start(wf, {})
    old_run = await api.wait_terminal(old["execution_id"])
    latest_run = await api.wait_terminal(latest["execution_id"])
    assert (old_run["version"], old_run["output"]) == (1, {"v": "one"})
    assert (latest_run["version"], latest_run["output"]) == (2, {"v": "two"})


async def test_start_an_unknown_version_is_422(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    reply = await api.call("POST", api.ws(f"/workflows/{wf}/executions"), json={"version": 3})
    error_of(reply, 422, "unknown_version")


async def test_start_answers_202_running_with_a_position(api: Api) -> None:
    wf = (await api.create_workflow(delayed(600)))["id"]
    reply = await api.call("POST", api.ws(f"/workflows/{wf}/executions"), json={"input": {}})
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"execution_id", "status", "position"}
    assert reply.body["status"] == "running" and reply.body["position"] > 0
    execution_id = reply.body["execution_id"]
    assert reply.headers["Location"] == f"/api/v1/{api.ws('/executions/' + execution_id)}"
    cancel = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    assert cancel.status == 202, cancel.body


async def test_start_answers_the_status_the_execution_has_now(api: Api) -> None:
    """A workflow of inline nodes is decided by the start command itself: the 202 says so."""
    wf = (await api.create_workflow(TRANSFORM))["id"]
    started = await api.start(wf, {"x": 1})
    assert started["status"] == "completed"
    slow = (await api.create_workflow(delayed(600)))["id"]
    assert (await api.start(slow, {}))["status"] == "running"


async def test_same_idempotency_key_answers_the_same_execution(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    path = api.ws(f"/workflows/{wf}/executions")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await api.call("POST", path, json={"input": {"x": 1}}, headers=key)
    second = await api.call("POST", path, json={"input": {"x": 1}}, headers=key)
    assert (first.status, second.status) == (202, 202), (first.body, second.body)
    assert first.body["execution_id"] == second.body["execution_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    at = max(first.body["position"], second.body["position"])
    page = await get_ok(api, api.ws("/executions"), workflow_id=wf, min_position=at)
    assert [e["id"] for e in page["items"]] == [first.body["execution_id"]]
    other_key = await api.call(
        "POST", path, json={"input": {"x": 1}}, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert other_key.body["execution_id"] != first.body["execution_id"]


async def test_concurrent_starts_with_one_idempotency_key_make_one_execution(api: Api) -> None:
    wf = (await api.create_workflow(delayed(0.2)))["id"]
    path = api.ws(f"/workflows/{wf}/executions")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    replies = await asyncio.gather(
        *(api.call("POST", path, json={"input": {"x": 1}}, headers=key) for _ in range(5))
    )
    assert [r.status for r in replies] == [202] * 5, [r.body for r in replies]
    ids = {r.body["execution_id"] for r in replies}
    assert len(ids) == 1
    done = await api.wait_terminal(ids.pop())
    page = await get_ok(api, api.ws("/executions"), workflow_id=wf)
    assert [e["id"] for e in page["items"]] == [done["id"]]


async def test_idempotent_repeat_after_archiving_answers_the_same_execution(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    path = api.ws(f"/workflows/{wf}/executions")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await api.call("POST", path, json={"input": {"x": 1}}, headers=key)
    assert first.status == 202, first.body
    archived = await api.call("DELETE", api.ws(f"/workflows/{wf}"))
    assert archived.status == 200, archived.body
    repeat = await api.call("POST", path, json={"input": {"x": 1}}, headers=key)
    assert repeat.status == 202, (repeat.status, repeat.body)
    assert repeat.body["execution_id"] == first.body["execution_id"]


async def test_same_idempotency_key_with_other_input_is_409(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    path = api.ws(f"/workflows/{wf}/executions")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await api.call("POST", path, json={"input": {"x": 1}}, headers=key)
    assert first.status == 202, first.body
    again = await api.call("POST", path, json={"input": {"x": 2}}, headers=key)
    error_of(again, 409, "idempotency_key_reused")


async def test_list_executions_filters_by_status_and_workflow(api: Api) -> None:
    quick = (await api.create_workflow(TRANSFORM))["id"]
    slow = (await api.create_workflow(delayed(600)))["id"]
    done = await api.start(quick, {"x": 1})
    waiting = await api.start(slow, {"x": 2})
    at = max(done["position"], waiting["position"])

    async def ids(**filters: Any) -> list[str]:
        page = await get_ok(api, api.ws("/executions"), min_position=at, **filters)
        return [e["id"] for e in page["items"]]

    assert await ids(status="completed") == [done["execution_id"]]
    assert await ids(status="running") == [waiting["execution_id"]]
    assert await ids(status="failed") == []
    assert await ids(workflow_id=quick) == [done["execution_id"]]
    assert await ids(workflow_id=slow) == [waiting["execution_id"]]
    assert await ids(workflow_id=slow, status="completed") == []
    assert await ids() == [waiting["execution_id"], done["execution_id"]]
    cancel = await api.call("POST", api.ws(f"/executions/{waiting['execution_id']}/cancel"))
    assert cancel.status == 202, cancel.body


async def test_list_executions_filters_by_start_time(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    started = [await api.start(wf, {"x": i}) for i in range(3)]
    at = max(s["position"] for s in started)
    first, second, third = [
        await get_ok(api, api.ws(f"/executions/{s['execution_id']}"), min_position=at)
        for s in started
    ]
    assert first["started_at"] < second["started_at"] < third["started_at"]

    async def ids(**filters: Any) -> list[str]:
        page = await get_ok(api, api.ws("/executions"), **filters)
        return [e["id"] for e in page["items"]]

    after_first = await ids(started_after=first["started_at"])
    assert after_first == [third["id"], second["id"]]
    before_third = await ids(started_before=third["started_at"])
    assert before_third == [second["id"], first["id"]]
    between = await ids(started_after=first["started_at"], started_before=third["started_at"])
    assert between == [second["id"]]


async def test_list_executions_paginates_newest_first(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    started = [await api.start(wf, {"x": i}) for i in range(5)]
    at = max(s["position"] for s in started)
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await get_ok(
            api, api.ws("/executions"), workflow_id=wf, limit=2, cursor=cursor, min_position=at
        )
        assert set(page) == {"items", "next_cursor"}
        pages.append([e["id"] for e in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, pages
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [execution_id for page in pages for execution_id in page]
    assert seen == [s["execution_id"] for s in reversed(started)]


async def test_get_execution_has_per_node_status_and_attempts(api: Api) -> None:
    wf = await api.create_workflow(
        {
            "name": "two steps",
            "nodes": [
                {"id": "a", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}},
                {
                    "id": "b",
                    "type": "transform",
                    "config": {"set": {"y": "{{ nodes.a.output.x }}"}},
                },
            ],
            "edges": [{"source": "a", "target": "b"}],
        }
    )
    started = await api.start(wf["id"], {"x": 7})
    done = await api.wait_terminal(started["execution_id"])
    assert (done["id"], done["workflow_id"], done["version"]) == (
        started["execution_id"],
        wf["id"],
        1,
    )
    assert (done["status"], done["input"], done["output"], done["error"]) == (
        "completed",
        {"x": 7},
        {"y": 7},
        None,
    )
    assert done["started_at"] and done["closed_at"]
    nodes = nodes_by_id(done)
    assert set(nodes) == {"a", "b"}
    for node in nodes.values():
        assert (node["type"], node["status"], node["attempts"], node["error"]) == (
            "transform",
            "completed",
            1,
            None,
        )
        assert node["started_at"] and node["closed_at"]


async def test_history_lists_the_events_in_order_without_secrets(api: Api) -> None:
    wf = await api.create_workflow(TRANSFORM)
    started = await api.start(wf["id"], {"x": 1})
    await api.wait_terminal(started["execution_id"])
    history = await get_ok(api, api.ws(f"/executions/{started['execution_id']}/history"))
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))
    types = [e["type"] for e in history]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionCompleted"
    assert {"NodeScheduled", "NodeCompleted"} <= set(types)
    for event in history:
        assert set(event) == {"version", "type", "recorded_at", "data"}
        assert not {"originator_id", "originator_topic", "originator_version"} & set(event["data"])
    assert history[0]["data"]["input"] == {"x": 1}
    assert history[0]["data"]["workflow_id"] == wf["id"]
    assert history[-1]["data"]["output"] == {"x": 1}
    text = json.dumps(history)
    assert api.token is not None and api.token not in text
    for secret in ("correct horse", "password", "scrypt$"):
        assert secret not in text


async def test_cancel_a_running_execution(api: Api) -> None:
    wf = (await api.create_workflow(delayed(600)))["id"]
    started = await api.start(wf, {"x": 1})
    execution_id = started["execution_id"]
    before = await get_ok(
        api, api.ws(f"/executions/{execution_id}"), min_position=started["position"]
    )
    assert before["status"] == "running"
    assert nodes_by_id(before)["wait"]["status"] in ("scheduled", "running")
    reply = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    assert reply.status == 202, reply.body
    assert (reply.body["execution_id"], reply.body["status"]) == (execution_id, "canceled")
    after = await get_ok(
        api, api.ws(f"/executions/{execution_id}"), min_position=reply.body["position"]
    )
    assert after["status"] == "canceled" and after["closed_at"]
    assert after["error"]["type"] == "canceled"
    nodes = nodes_by_id(after)
    assert nodes["wait"]["status"] == "canceled"
    assert nodes.get("done", {}).get("status") != "completed"


async def test_cancel_again_is_202_and_changes_nothing(api: Api) -> None:
    wf = (await api.create_workflow(delayed(600)))["id"]
    execution_id = (await api.start(wf, {"x": 1}))["execution_id"]
    first = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    assert first.status == 202, first.body
    # The gateway's documented answer: 202 with the execution's (unchanged) status.
    again = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    assert again.status == 202, again.body
    assert again.body["status"] == "canceled"
    history = await get_ok(api, api.ws(f"/executions/{execution_id}/history"))
    assert [e["type"] for e in history].count("ExecutionCanceled") == 1


async def test_cancel_a_completed_execution_leaves_it_completed(api: Api) -> None:
    wf = (await api.create_workflow(TRANSFORM))["id"]
    started = await api.start(wf, {"x": 1})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    reply = await api.call("POST", api.ws(f"/executions/{done['id']}/cancel"))
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "completed"
    again = await get_ok(api, api.ws(f"/executions/{done['id']}"))
    assert (again["status"], again["output"]) == ("completed", {"x": 1})


# ---------------------------------------------------------------- 4. bad input


async def test_malformed_json_is_400(accepted: Accepted) -> None:
    api = accepted.api
    wf = accepted.workflow["id"]
    for path in (
        api.ws("/workflows"),
        api.ws(f"/workflows/{wf}/executions"),
        "auth/register",
        "workspaces",
    ):
        for raw in ('{"name": "t", "nodes": [', "NaN", b"\xff\xfe"):
            error_of(await api.call("POST", path, data=raw), 400, "malformed_json")
    error_of(await api.call("PUT", api.ws(f"/workflows/{wf}"), data="{"), 400, "malformed_json")
    error_of(await api.call("POST", api.ws("/workflows"), data=""), 400, "malformed_json")
    await accepted.assert_undisturbed()


async def test_nul_characters_are_422_naming_the_field(accepted: Accepted) -> None:
    """PostgreSQL text/jsonb cannot hold NUL: accepted, it would stop the projector."""
    api = accepted.api
    wf = accepted.workflow["id"]
    for path, body, field in (
        (f"/workflows/{wf}/executions", {"input": {"a": ["ok", "x\u0000"]}}, "input.a[1]"),
        ("/workflows", {"name": "n\u0000", "nodes": []}, "name"),
        ("/api-keys", {"name": "k", "role": "viewer", "x\u0000": 1}, "x\u0000"),
        ("/variables/v", {"value": {"deep": "\u0000"}}, "value.deep"),
    ):
        method = "PUT" if "variables" in path else "POST"
        details = error_of(await api.call(method, api.ws(path), json=body), 422, "invalid_request")
        assert paths_of(details) == [field], details
    await accepted.assert_undisturbed()


async def test_non_object_bodies_are_422(accepted: Accepted) -> None:
    api = accepted.api
    wf = accepted.workflow["id"]
    details = error_of(
        await api.call("POST", api.ws("/workflows"), json=[1]), 422, "invalid_definition"
    )
    assert paths_of(details) == [""]
    start = await api.call("POST", api.ws(f"/workflows/{wf}/executions"), json=[1])
    error_of(start, 422, "invalid_request")
    extra = await api.call("POST", api.ws(f"/workflows/{wf}/executions"), json={"workflow_id": wf})
    assert paths_of(error_of(extra, 422, "invalid_request")) == ["workflow_id"]
    await accepted.assert_undisturbed()


def _n(node_id: str, value: Any = 1) -> dict[str, Any]:
    return {"id": node_id, "type": "transform", "config": {"set": {"x": value}}}


INVALID_DEFINITIONS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "cycle": (
        {
            "name": "c",
            "nodes": [_n("a"), _n("b"), _n("c")],
            "edges": [
                {"source": "a", "target": "b"},
                {"source": "b", "target": "c"},
                {"source": "c", "target": "a"},
            ],
        },
        ["edges[2]"],
    ),
    "self-loop": (
        {"name": "c", "nodes": [_n("a")], "edges": [{"source": "a", "target": "a"}]},
        ["edges[0]"],
    ),
    "dangling edge": (
        {"name": "c", "nodes": [_n("a")], "edges": [{"source": "a", "target": "ghost"}]},
        ["edges[0].target"],
    ),
    "duplicate id": ({"name": "c", "nodes": [_n("a"), _n("a")]}, ["nodes[1].id"]),
    "unknown node type": (
        {"name": "c", "nodes": [_n("a"), {"id": "b", "type": "teleport", "config": {}}]},
        ["nodes[1].type"],
    ),
    "missing url": (
        {"name": "c", "nodes": [{"id": "a", "type": "http_request", "config": {"method": "GET"}}]},
        ["nodes[0].config.url"],
    ),
    "unclosed expression": (
        {"name": "c", "nodes": [_n("a", "{{ trigger.x ")]},
        ["nodes[0].config.set.x"],
    ),
    "unparseable expression": (
        {"name": "c", "nodes": [_n("a", "{{ 1 + }}")]},
        ["nodes[0].config.set.x"],
    ),
    "expression naming an unknown node": (
        {"name": "c", "nodes": [_n("a", "{{ nodes.nope.output }}")]},
        ["nodes[0].config.set.x"],
    ),
    "no nodes": ({"name": "c", "nodes": []}, ["nodes"]),
    "schedule without cron": (
        {"name": "c", "trigger": {"type": "schedule"}, "nodes": [_n("a")]},
        ["trigger.cron"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID_DEFINITIONS))
async def test_invalid_definition_is_422_with_the_problem_path(
    accepted: Accepted, case: str
) -> None:
    api = accepted.api
    definition, paths = INVALID_DEFINITIONS[case]
    reply = await api.call("POST", api.ws("/workflows"), json=definition)
    assert paths_of(error_of(reply, 422, "invalid_definition")) == paths
    put = await api.call("PUT", api.ws(f"/workflows/{accepted.workflow['id']}"), json=definition)
    assert paths_of(error_of(put, 422, "invalid_definition")) == paths
    await accepted.assert_undisturbed()


async def test_definition_with_several_problems_reports_each(accepted: Accepted) -> None:
    api = accepted.api
    definition = {
        "name": "many",
        "nodes": [
            _n("a", "{{ trigger.x "),
            _n("a"),
            {"id": "b", "type": "teleport", "config": {}},
            {"id": "c", "type": "http_request", "config": {"method": "GET"}},
            _n("d"),
            _n("e"),
        ],
        "edges": [
            {"source": "a", "target": "ghost"},
            {"source": "d", "target": "e"},
            {"source": "e", "target": "d"},
        ],
    }
    reply = await api.call("POST", api.ws("/workflows"), json=definition)
    paths = paths_of(error_of(reply, 422, "invalid_definition"))
    assert sorted(paths) == sorted(
        [
            "nodes[0].config.set.x",
            "nodes[1].id",
            "nodes[2].type",
            "nodes[3].config.url",
            "edges[0].target",
            "edges[2]",
        ]
    )
    await accepted.assert_undisturbed()


async def test_unknown_ids_are_404(accepted: Accepted) -> None:
    api = accepted.api
    missing = str(uuid.uuid4())
    for method, rest in (
        ("GET", f"/workflows/{missing}"),
        ("PUT", f"/workflows/{missing}"),
        ("DELETE", f"/workflows/{missing}"),
        ("GET", f"/workflows/{missing}/versions"),
        ("GET", f"/workflows/{missing}/versions/1"),
        ("POST", f"/workflows/{missing}/activate"),
        ("POST", f"/workflows/{missing}/deactivate"),
        ("POST", f"/workflows/{missing}/executions"),
        ("GET", f"/executions/{missing}"),
        ("GET", f"/executions/{missing}/history"),
        ("POST", f"/executions/{missing}/cancel"),
        # ids of the wrong kind: the workspace's own id names no workflow or execution
        ("GET", f"/workflows/{api.workspace}"),
        ("GET", f"/executions/{api.workspace}"),
        ("GET", f"/executions/{accepted.workflow['id']}/history"),
        ("POST", f"/workflows/{accepted.execution_id}/executions"),
    ):
        body = TRANSFORM if method == "PUT" else None
        reply = await api.call(method, api.ws(rest), json=body)
        assert reply.status == 404, (method, rest, reply.status, reply.body)
        error_of(reply, 404, "not_found")
    error_of(await api.call("GET", f"workspaces/{missing}/workflows"), 404, "not_found")
    await accepted.assert_undisturbed()


async def test_malformed_ids_in_paths_are_404(accepted: Accepted) -> None:
    api = accepted.api
    wf = accepted.workflow["id"]
    for method, path in (
        ("GET", "workspaces/not-a-uuid/workflows"),
        ("GET", "workspaces/not-a-uuid/executions"),
        ("GET", api.ws("/workflows/not-a-uuid")),
        ("GET", api.ws("/workflows/123/versions")),
        ("POST", api.ws("/workflows/not-a-uuid/executions")),
        ("GET", api.ws(f"/workflows/{wf}/versions/one")),
        ("GET", api.ws(f"/workflows/{wf}/versions/-1")),
        ("GET", api.ws("/executions/not-a-uuid")),
        ("GET", api.ws("/executions/not-a-uuid/history")),
        ("POST", api.ws("/executions/not-a-uuid/cancel")),
    ):
        reply = await api.call(method, path)
        assert reply.status == 404, (method, path, reply.status, reply.body)
        error_of(reply, 404, "not_found")
    await accepted.assert_undisturbed()


async def test_other_tenants_resources_are_404(accepted: Accepted, other: Api) -> None:
    mine = accepted.api
    wf, execution = accepted.workflow["id"], accepted.execution_id
    # another user in my workspace
    for method, rest in (
        ("GET", "/workflows"),
        ("POST", "/workflows"),
        ("GET", f"/workflows/{wf}"),
        ("PUT", f"/workflows/{wf}"),
        ("DELETE", f"/workflows/{wf}"),
        ("POST", f"/workflows/{wf}/executions"),
        ("GET", "/executions"),
        ("GET", f"/executions/{execution}"),
        ("GET", f"/executions/{execution}/history"),
        ("POST", f"/executions/{execution}/cancel"),
    ):
        body = TRANSFORM if method in ("PUT", "POST") and rest.endswith(("workflows", wf)) else None
        reply = await other.call(method, mine.ws(rest), json=body)
        error_of(reply, 404, "not_found")
    # my ids through the other user's own workspace
    for method, rest in (
        ("GET", f"/workflows/{wf}"),
        ("PUT", f"/workflows/{wf}"),
        ("DELETE", f"/workflows/{wf}"),
        ("GET", f"/workflows/{wf}/versions"),
        ("GET", f"/workflows/{wf}/versions/1"),
        ("POST", f"/workflows/{wf}/activate"),
        ("POST", f"/workflows/{wf}/executions"),
        ("GET", f"/executions/{execution}"),
        ("GET", f"/executions/{execution}/history"),
        ("POST", f"/executions/{execution}/cancel"),
    ):
        body = TRANSFORM if method == "PUT" else None
        reply = await other.call(method, other.ws(rest), json=body)
        assert reply.status == 404, (method, rest, reply.status, reply.body)
        error_of(reply, 404, "not_found")
    page = await get_ok(other, other.ws("/executions"), workflow_id=wf)
    assert page["items"] == []
    await accepted.assert_undisturbed()


async def test_body_over_the_limit_is_413(accepted: Accepted) -> None:
    api = accepted.api
    big = {"name": "big", "nodes": [_n("a", "x" * 70_000)]}
    reply = await api.call("POST", api.ws("/workflows"), json=big)
    error_of(reply, 413, "payload_too_large")
    start = await api.call(
        "POST",
        api.ws(f"/workflows/{accepted.workflow['id']}/executions"),
        json={"input": "y" * 70_000},
    )
    error_of(start, 413, "payload_too_large")
    await accepted.assert_undisturbed()


async def test_chunked_body_over_the_limit_is_413(accepted: Accepted) -> None:
    api = accepted.api

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "big", "nodes": [{"id": "a", "type": "transform",'
        yield b' "config": {"set": {"x": "'
        for _ in range(10):
            yield b"x" * 8192
        yield b'"}}}]}'

    url = f"{api.base}/api/v1/{api.ws('/workflows')}"
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    async with api.session.post(url, data=chunks(), headers=headers) as resp:
        assert "Content-Length" not in resp.request_info.headers
        body = await resp.json(content_type=None)
    error_of(Reply(resp.status, body, resp.headers), 413, "payload_too_large")
    await accepted.assert_undisturbed()


async def test_body_under_the_limit_is_accepted(api: Api) -> None:
    definition = {"name": "near the limit", "nodes": [_n("a", "x" * 60_000)]}
    assert len(json.dumps(definition)) < 65_536
    created = await api.create_workflow(definition)
    got = await get_ok(api, api.ws(f"/workflows/{created['id']}"), min_position=created["position"])
    assert got["definition"]["nodes"][0]["config"]["set"]["x"] == "x" * 60_000


@pytest.mark.parametrize(
    ("params", "code", "paths"),
    [
        ({"status": "bogus"}, "invalid_request", ["status"]),
        ({"limit": "0"}, "invalid_request", ["limit"]),
        ({"limit": "201"}, "invalid_request", ["limit"]),
        ({"limit": "two"}, "invalid_request", ["limit"]),
        ({"workflow_id": "nope"}, "invalid_request", ["workflow_id"]),
        ({"started_after": "yesterday"}, "invalid_request", ["started_after"]),
        ({"status": "bogus", "limit": "0"}, "invalid_request", ["status", "limit"]),
        ({"cursor": "garbage"}, "invalid_cursor", ["cursor"]),
        ({"min_position": "-1"}, "invalid_request", ["min_position"]),
        ({"min_position": "soon"}, "invalid_request", ["min_position"]),
        ({"min_position": str(10**15)}, "invalid_request", ["min_position"]),
    ],
)
async def test_invalid_execution_list_query_is_422(
    accepted: Accepted, params: dict[str, str], code: str, paths: list[str]
) -> None:
    api = accepted.api
    reply = await api.call("GET", api.ws("/executions"), **params)
    assert paths_of(error_of(reply, 422, code)) == paths
    await accepted.assert_undisturbed()


async def test_invalid_query_on_other_reads_is_422(accepted: Accepted) -> None:
    api = accepted.api
    wf, execution = accepted.workflow["id"], accepted.execution_id
    for path, params in (
        (api.ws("/workflows"), {"include_archived": "maybe"}),
        (api.ws("/workflows"), {"min_position": "-1"}),
        (api.ws(f"/workflows/{wf}"), {"min_position": "-1"}),
        (api.ws(f"/workflows/{wf}/versions"), {"min_position": "x"}),
        (api.ws(f"/executions/{execution}"), {"min_position": "-1"}),
        (api.ws(f"/executions/{execution}/history"), {"min_position": "-1"}),
        ("workspaces", {"min_position": "-1"}),
    ):
        reply = await api.call("GET", path, **params)
        assert reply.status == 422, (path, params, reply.body)
        assert paths_of(error_of(reply, 422, "invalid_request")) == list(params)
    await accepted.assert_undisturbed()


async def test_invalid_start_requests_are_422(accepted: Accepted) -> None:
    api = accepted.api
    path = api.ws(f"/workflows/{accepted.workflow['id']}/executions")
    for body, headers, expected in (
        ({"version": 0}, None, ["version"]),
        ({"version": "latest"}, None, ["version"]),
        ({"inputs": {}}, None, ["inputs"]),
        ({}, {"Idempotency-Key": "k" * 256}, ["idempotency_key"]),
    ):
        reply = await api.call("POST", path, json=body, headers=headers)
        assert paths_of(error_of(reply, 422, "invalid_request")) == expected, body
    await accepted.assert_undisturbed()


async def test_unknown_route_and_method_answer_in_the_error_format(api: Api) -> None:
    error_of(await api.call("GET", "nowhere"), 404, "not_found")
    reply = await api.call("PATCH", api.ws("/workflows"))
    error_of(reply, 405, "method_not_allowed")
    assert "GET" in reply.headers["Allow"] and "POST" in reply.headers["Allow"]


# ---------------------------------------------------------------- 5. operations


async def test_health(api: Api) -> None:
    reply = await api.call("GET", "/health")
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "ok"


async def test_ready_reports_its_checks(api: Api) -> None:
    reply = await api.call("GET", "/ready")
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "ready"
    checks = reply.body["checks"]
    assert checks["postgres"] == "ok" and checks["redis"] == "ok"
    for consumer in ("relay", "projector", "matching", "timers"):
        assert checks[f"consumer:{consumer}"] == "ok"


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels…}` in Prometheus text, or None."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


async def test_metrics_is_prometheus_text(api: Api) -> None:
    assert (await api.call("GET", "/health")).status == 200
    async with api.session.get(f"{api.base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert "# TYPE linkflow_http_requests_total counter" in text
    assert "# TYPE linkflow_commands_total counter" in text
    health = _sample(text, "linkflow_http_requests_total", method="GET", route="/health")
    assert health is not None and health >= 1
    registered = _sample(text, "linkflow_commands_total", command="RegisterUser", outcome="ok")
    assert registered is not None and registered >= 1


async def test_openapi_lists_the_workflow_and_execution_paths(api: Api) -> None:
    reply = await unsigned(api).call("GET", "openapi.json")
    assert reply.status == 200, reply.body
    document = reply.body
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    ws = "/api/v1/workspaces/{ws}"
    expected = {
        f"{ws}/workflows": {"get", "post"},
        f"{ws}/workflows/{{wf}}": {"get", "put", "delete"},
        f"{ws}/workflows/{{wf}}/versions": {"get"},
        f"{ws}/workflows/{{wf}}/executions": {"post"},
        f"{ws}/executions": {"get"},
        f"{ws}/executions/{{id}}": {"get"},
        f"{ws}/executions/{{id}}/history": {"get"},
        f"{ws}/executions/{{id}}/cancel": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
