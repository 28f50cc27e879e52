"""Inbound webhooks against `linkflow run all` over real HTTP: the hook shown in workflow answers,
each auth mode (right, wrong, missing), hmac replays, stale and tampered signatures, methods,
unknown and deactivated hooks, `respond: on_completion`, the body limit, and what is recorded.
The hooks' secrets are workspace credentials, created through the credentials API.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api import Api, Reply, signed_up
from processes import Process

from infra.signing import sign

WAIT_S = 3.0  # the stack's LINKFLOW_WEBHOOK_WAIT_S
SECRET = "s3cret-value-for-webhooks-0123456789"


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    """A short wait for `respond: on_completion`."""
    return {"LINKFLOW_WEBHOOK_WAIT_S": str(WAIT_S)}


@pytest.fixture
def add_credential(stack: tuple[str, Process]) -> Any:
    """Creates a credential through the credentials API (as the workspace's owner)."""

    async def add(api: Api, name: str, data: dict[str, str]) -> None:
        made = await api.call("POST", api.ws("/credentials"), json={"name": name, "data": data})
        assert made.status == 201, made.body

    return add


@pytest.fixture
async def api(stack: tuple[str, Process]) -> AsyncIterator[Api]:
    async with signed_up(stack[0]) as client:
        yield client


def echo(trigger: dict[str, Any], name: str = "hook") -> dict[str, Any]:
    """A webhook workflow whose output is the body it received."""
    return {
        "name": name,
        "trigger": {"type": "webhook", **trigger},
        "nodes": [
            {"id": "t", "type": "transform", "config": {"set": {"got": "{{ trigger.body }}"}}}
        ],
    }


def delayed_echo(seconds: float, respond: str) -> dict[str, Any]:
    definition = echo({"respond": respond}, f"wait {seconds}s")
    definition["nodes"].insert(0, {"id": "wait", "type": "delay", "config": {"seconds": seconds}})
    definition["edges"] = [{"source": "wait", "target": "t"}]
    return definition


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    error = reply.body["error"]
    assert error["code"] == code and error["message"], error
    return error


async def active_hook(api: Api, definition: dict[str, Any]) -> tuple[str, str]:
    """Create and activate a webhook workflow; (workflow id, hook path)."""
    created = await api.create_workflow(definition)
    activated = await api.call("POST", api.ws(f"/workflows/{created['id']}/activate"))
    assert activated.status == 200, activated.body
    return created["id"], created["webhook"]["path"]


def anonymous(api: Api) -> Api:
    """A client of the same server that sends no LinkFlow token."""
    return Api(api.base, api.session)


async def executions_of(api: Api, workflow_id: str, at: int = 0) -> list[dict[str, Any]]:
    reply = await api.call("GET", api.ws("/executions"), workflow_id=workflow_id, min_position=at)
    assert reply.status == 200, reply.body
    return list(reply.body["items"])


# ---------------------------------------------------------------- the hook in workflow answers


async def test_workflow_answers_show_the_hook_while_the_trigger_is_a_webhook(api: Api) -> None:
    created = await api.create_workflow(echo({}))
    hook = created["webhook"]
    assert set(hook) == {"token", "path"} and len(hook["token"]) >= 32
    assert hook["path"] == f"/api/v1/hooks/{hook['token']}"
    wf, at = created["id"], created["position"]
    got = await api.call("GET", api.ws(f"/workflows/{wf}"), min_position=at)
    assert got.body["webhook"] == hook
    listed = await api.call("GET", api.ws("/workflows"), min_position=at)
    assert [w.get("webhook") for w in listed.body] == [hook]
    other = await api.create_workflow(echo({}, "other"))
    assert other["webhook"]["token"] != hook["token"]

    manual = {"name": "manual", "nodes": echo({})["nodes"]}
    updated = await api.call("PUT", api.ws(f"/workflows/{wf}"), json=manual)
    assert updated.status == 200 and "webhook" not in updated.body, updated.body
    got = await api.call("GET", api.ws(f"/workflows/{wf}"), min_position=updated.body["position"])
    assert "webhook" not in got.body
    back = await api.call("PUT", api.ws(f"/workflows/{wf}"), json=echo({}))
    assert back.body["webhook"] == hook  # the token stays with the workflow
    assert "webhook" not in await api.create_workflow(manual)


# ---------------------------------------------------------------- auth modes


def _basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


AUTH_MODES: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, str], dict[str, str]]] = {
    # mode: (auth, credential data, right headers, wrong headers)
    "header": (
        {"type": "header", "name": "X-Hook-Key"},
        {"secret": SECRET},
        {"X-Hook-Key": SECRET},
        {"X-Hook-Key": SECRET + "x"},
    ),
    "basic": (
        {"type": "basic"},
        {"username": "ada", "password": SECRET},
        _basic("ada", SECRET),
        _basic("ada", SECRET[:-1]),
    ),
    "bearer": (
        {"type": "bearer"},
        {"secret": SECRET},
        {"Authorization": f"Bearer {SECRET}"},
        {"Authorization": "Bearer not-the-secret"},
    ),
}


async def _hook_with_auth(api: Api, add_credential: Any, mode: str) -> tuple[str, str]:
    """An active webhook workflow whose auth `mode` uses a new credential `<mode>-cred`."""
    auth: dict[str, Any] = {"type": "hmac"}
    data = {"secret": SECRET}
    if mode != "hmac":
        auth, data, _, _ = AUTH_MODES[mode]
    await add_credential(api, f"{mode}-cred", data)
    return await active_hook(api, echo({"auth": {**auth, "credential": f"{mode}-cred"}}))


def _signed(body: bytes, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json"} | sign(secret, body, at or datetime.now(UTC))


@pytest.mark.parametrize("mode", ["header", "basic", "bearer", "hmac"])
async def test_right_credentials_start_an_execution_with_the_body(
    api: Api, add_credential: Any, mode: str
) -> None:
    wf, path = await _hook_with_auth(api, add_credential, mode)
    body = json.dumps({"order": 42, "mode": mode}).encode()
    headers = _signed(body) if mode == "hmac" else AUTH_MODES[mode][2]
    reply = await anonymous(api).call(
        "POST", path, data=body, headers=headers | {"Content-Type": "application/json"}
    )
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"execution_id", "status", "position"}
    done = await api.wait_terminal(reply.body["execution_id"])
    assert done["workflow_id"] == wf and done["status"] == "completed"
    assert done["input"]["method"] == "POST" and done["input"]["path"] == path
    assert done["input"]["body"] == {"order": 42, "mode": mode}
    assert done["output"] == {"got": {"order": 42, "mode": mode}}


@pytest.mark.parametrize("mode", ["header", "basic", "bearer", "hmac"])
async def test_wrong_or_missing_credentials_are_401(
    api: Api, add_credential: Any, mode: str
) -> None:
    wf, path = await _hook_with_auth(api, add_credential, mode)
    body = b'{"x": 1}'
    wrong = _signed(body, secret="another secret") if mode == "hmac" else AUTH_MODES[mode][3]
    client = anonymous(api)
    for headers in (wrong, {}):
        reply = await client.call(
            "POST", path, data=body, headers=headers | {"Content-Type": "application/json"}
        )
        error = assert_error(reply, 401, "unauthenticated")
        assert SECRET not in json.dumps(reply.body)
        assert error["details"] and error["details"][0]["path"].startswith("headers")
    assert await executions_of(api, wf) == []


async def test_a_missing_credential_refuses_every_request(api: Api) -> None:
    auth = {"type": "bearer", "credential": "never-created"}
    _, path = await active_hook(api, echo({"auth": auth}))
    reply = await anonymous(api).call("POST", path, headers={"Authorization": "Bearer anything"})
    assert_error(reply, 401, "unauthenticated")


# ---------------------------------------------------------------- hmac: replays and freshness


async def test_a_replayed_signature_is_409_and_starts_nothing_more(
    api: Api, add_credential: Any
) -> None:
    wf, path = await _hook_with_auth(api, add_credential, "hmac")
    body = b'{"pay": 10}'
    headers = _signed(body)
    client = anonymous(api)
    first = await client.call("POST", path, data=body, headers=headers)
    assert first.status == 202, first.body
    replay = await client.call("POST", path, data=body, headers=headers)
    assert_error(replay, 409, "replayed")
    # other recorded headers do not make it a new request
    again = await client.call("POST", path, data=body, headers=headers | {"X-Extra": "1"})
    assert_error(again, 409, "replayed")
    items = await executions_of(api, wf, first.body["position"])
    assert [e["id"] for e in items] == [first.body["execution_id"]]


async def test_a_stale_or_tampered_signature_is_401(api: Api, add_credential: Any) -> None:
    wf, path = await _hook_with_auth(api, add_credential, "hmac")
    body = b'{"pay": 10}'
    client = anonymous(api)
    stale = _signed(body, at=datetime.now(UTC) - timedelta(seconds=301))
    error = assert_error(
        await client.call("POST", path, data=body, headers=stale), 401, "unauthenticated"
    )
    assert "300" in error["details"][0]["message"]
    tampered = await client.call("POST", path, data=b'{"pay": 1000}', headers=_signed(body))
    assert_error(tampered, 401, "unauthenticated")
    assert await executions_of(api, wf) == []


# ---------------------------------------------------------------- methods, unknown, inactive


async def test_a_method_the_trigger_does_not_list_is_405_with_allow(api: Api) -> None:
    wf, path = await active_hook(api, echo({"methods": ["PUT", "GET"]}))
    client = anonymous(api)
    reply = await client.call("POST", path, json={"x": 1})
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "PUT, GET"
    got = await client.call("GET", path, q="1")
    assert got.status == 202, got.body
    done = await api.wait_terminal(got.body["execution_id"])
    assert (done["input"]["method"], done["input"]["query"], done["input"]["body"]) == (
        "GET",
        {"q": "1"},
        None,
    )


async def test_unknown_and_non_webhook_tokens_are_404_alike(api: Api) -> None:
    client = anonymous(api)
    never_active = (await api.create_workflow(echo({})))["webhook"]["path"]
    # active version 1 is manual; the latest (inactive) version 2 is a webhook
    manual = await api.create_workflow({"name": "m", "nodes": echo({})["nodes"]})
    assert (await api.call("POST", api.ws(f"/workflows/{manual['id']}/activate"))).status == 200
    later = await api.call("PUT", api.ws(f"/workflows/{manual['id']}"), json=echo({}))
    manual_active = later.body["webhook"]["path"]
    archived_wf, archived = await active_hook(api, echo({}, "archived"))
    assert (await api.call("DELETE", api.ws(f"/workflows/{archived_wf}"))).status == 200
    unknown = ("/api/v1/hooks/not-a-token", "/api/v1/hooks/" + "x" * 500)
    for path in (*unknown, never_active, manual_active, archived):
        reply = await client.call("POST", path, json={})
        error = assert_error(reply, 404, "not_found")
        assert error["message"] == "webhook not found"


async def test_deactivating_stops_the_hook_and_reactivating_brings_it_back(api: Api) -> None:
    wf, path = await active_hook(api, echo({}))
    client = anonymous(api)
    assert (await client.call("POST", path, json={"n": 1})).status == 202
    off = await api.call("POST", api.ws(f"/workflows/{wf}/deactivate"))
    assert off.status == 200, off.body
    assert_error(await client.call("POST", path, json={"n": 2}), 404, "not_found")
    on = await api.call("POST", api.ws(f"/workflows/{wf}/activate"))
    assert on.status == 200, on.body
    again = await client.call("POST", path, json={"n": 3})
    assert again.status == 202, again.body
    items = await executions_of(api, wf, again.body["position"])
    assert len(items) == 2


# ---------------------------------------------------------------- answers and input


async def test_respond_on_completion_answers_the_output(api: Api) -> None:
    _, path = await active_hook(api, delayed_echo(0.2, "on_completion"))
    reply = await anonymous(api).call("POST", path, json={"v": "done"})
    assert reply.status == 200, reply.body
    assert reply.body == {
        "execution_id": reply.body["execution_id"],
        "status": "completed",
        "output": {"got": {"v": "done"}},
        "error": None,
    }


async def test_respond_on_completion_answers_202_running_after_the_wait(api: Api) -> None:
    _, path = await active_hook(api, delayed_echo(600, "on_completion"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await anonymous(api).call("POST", path, json={"v": 1})
    assert loop.time() - started >= WAIT_S - 0.1
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "running"
    await api.call("POST", api.ws(f"/executions/{reply.body['execution_id']}/cancel"))


async def test_body_over_the_limit_is_413(api: Api) -> None:
    wf, path = await active_hook(api, echo({}))
    reply = await anonymous(api).call("POST", path, json={"big": "x" * 70_000})
    assert_error(reply, 413, "payload_too_large")
    assert await executions_of(api, wf) == []


async def test_invalid_json_is_400_and_other_bodies_are_text(api: Api) -> None:
    wf, path = await active_hook(api, echo({}))
    client = anonymous(api)
    bad = await client.call(
        "POST", path, data=b'{"a": ', headers={"Content-Type": "application/json"}
    )
    error = assert_error(bad, 400, "malformed_json")
    assert error["details"][0]["path"] == "body"
    nul = await client.call("POST", path, json={"a": "\u0000"})  # jsonb could not store it
    assert_error(nul, 400, "malformed_json")
    text = await client.call("POST", path, data=b"a=1&b=2", headers={"Content-Type": "text/plain"})
    assert text.status == 202, text.body
    done = await api.wait_terminal(text.body["execution_id"])
    assert done["input"]["body"] == "a=1&b=2"
    assert len(await executions_of(api, wf)) == 1
    # A NUL in the query (percent-encoded, %00) is replaced, so the read models can store it.
    odd = await client.call("POST", path + "?k%00=v%00")
    assert odd.status == 202, odd.body
    done = await api.wait_terminal(odd.body["execution_id"])
    assert done["input"]["query"] == {"k\ufffd": "v\ufffd"}


async def test_idempotency_key_answers_the_same_execution(api: Api) -> None:
    wf, path = await active_hook(api, echo({}))
    client = anonymous(api)
    key = {"Idempotency-Key": "delivery-1"}
    first = await client.call("POST", path, json={"a": 1}, headers=key)
    second = await client.call("POST", path, json={"a": 1}, headers=key)
    assert (first.status, second.status) == (202, 202), (first.body, second.body)
    assert first.body["execution_id"] == second.body["execution_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    items = await executions_of(api, wf, second.body["position"])
    assert [e["id"] for e in items] == [first.body["execution_id"]]


async def test_recorded_input_carries_no_secret_header(api: Api, add_credential: Any) -> None:
    await add_credential(api, "hdr", {"secret": SECRET})
    _, path = await active_hook(
        api, echo({"auth": {"type": "header", "name": "X-Hook-Key", "credential": "hdr"}})
    )
    headers = {
        "X-Hook-Key": SECRET,
        "Authorization": "Bearer some-caller-token",
        "Cookie": "session=abc123",
        "X-Trace": "kept",
    }
    reply = await anonymous(api).call("POST", path, json={"n": 1}, headers=headers, page="2")
    assert reply.status == 202, reply.body
    execution_id = reply.body["execution_id"]
    done = await api.wait_terminal(execution_id)
    recorded = done["input"]["headers"]
    assert recorded["x-trace"] == "kept" and done["input"]["query"] == {"page": "2"}
    assert not {"x-hook-key", "authorization", "cookie"} & set(recorded)
    history = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    assert history.status == 200, history.body
    assert history.body[0]["data"]["input"] == done["input"]
    text = json.dumps(history.body)
    for secret in (SECRET, "some-caller-token", "abc123"):
        assert secret not in text


async def test_signature_headers_are_not_recorded(api: Api, add_credential: Any) -> None:
    _, path = await _hook_with_auth(api, add_credential, "hmac")
    body = b'{"n": 1}'
    signed = _signed(body)
    reply = await anonymous(api).call("POST", path, data=body, headers=signed)
    assert reply.status == 202, reply.body
    history = await api.call("GET", api.ws(f"/executions/{reply.body['execution_id']}/history"))
    recorded = history.body[0]["data"]["input"]["headers"]
    assert not {"x-linkflow-signature", "x-linkflow-timestamp"} & set(recorded)
    assert signed["X-LinkFlow-Signature"] not in json.dumps(history.body)


async def test_openapi_documents_the_hook_without_auth(api: Api) -> None:
    reply = await anonymous(api).call("GET", "openapi.json")
    operations = reply.body["paths"]["/api/v1/hooks/{token}"]
    assert set(operations) == {"get", "post", "put", "patch", "delete"}
    assert len({op["operationId"] for op in operations.values()}) == 5
    for op in operations.values():
        assert op["security"] == []
        assert {"401", "404", "405", "409", "413"} <= set(op["responses"])


async def test_a_webhook_run_gets_the_search_attributes_its_settings_derive(api: Api) -> None:
    definition = echo({})
    definition["settings"] = {
        "search_attributes": {
            "order": "{{ trigger.body.order }}",
            "customer": "{{ trigger.body.customer }}",
            "method": "{{ trigger.method }}",
        }
    }
    wf, path = await active_hook(api, definition)
    reply = await anonymous(api).call("POST", path, json={"order": 7, "customer": "acme"})
    assert reply.status == 202, reply.body
    done = await api.wait_terminal(reply.body["execution_id"])
    assert done["search_attributes"] == {"order": 7, "customer": "acme", "method": "POST"}
    found = await api.call(
        "GET",
        api.ws("/executions"),
        q="attr.customer = 'acme' AND attr.order = 7",
        min_position=reply.body["position"],
    )
    assert [item["id"] for item in found.body["items"]] == [reply.body["execution_id"]]
    assert wf == done["workflow_id"]
