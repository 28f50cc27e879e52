"""Signed callbacks against `linkflow run all` (which includes the callbacks role): the final
result is POSTed to the execution's (or the workflow's) callback URL with LinkFlow signature
headers that verify with the workspace's signing secret, retried with back-off until a 2xx
answer, each attempt recorded in the execution's history; a bad callback URL is refused."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from api import Api
from callback_receiver import Delivery, receiver
from processes import free_port
from stack import eventually

from infra.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

MAX_ATTEMPTS = 8


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    """Tiny back-off, so that retries take milliseconds."""
    return {
        "LINKFLOW_CALLBACK_BACKOFF_S": "0.05",
        "LINKFLOW_CALLBACK_BACKOFF_MAX_S": "0.25",
        "LINKFLOW_CALLBACK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }


def transform(value: str, **settings: Any) -> dict[str, Any]:
    """A one-node workflow that completes at start with output `{"v": value}`."""
    definition: dict[str, Any] = {
        "name": f"callback {value}",
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"v": value}}}],
    }
    if settings:
        definition["settings"] = settings
    return definition


async def secret_of(api: Api) -> str:
    reply = await api.call("GET", api.ws("/signing-secret"))
    assert reply.status == 200, reply.body
    assert reply.body["algorithm"] == "HMAC-SHA256"
    assert reply.body["headers"] == [TIMESTAMP_HEADER, SIGNATURE_HEADER]
    assert reply.headers["Cache-Control"] == "no-store"
    return str(reply.body["secret"])


async def callback_events(api: Api, execution_id: str) -> list[dict[str, Any]]:
    reply = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    assert reply.status == 200, reply.body
    return [e for e in reply.body if e["type"].startswith("Callback")]


async def settled(api: Api, execution_id: str, last: str) -> list[dict[str, Any]]:
    """The execution's Callback* events, once the last one is `last`."""

    async def probe() -> list[dict[str, Any]] | None:
        events = await callback_events(api, execution_id)
        return events if events and events[-1]["type"] == last else None

    return await eventually(probe, timeout=20)


async def callback_shown(api: Api, execution_id: str, status: str) -> dict[str, Any]:
    """The execution detail's `callback` once the read model shows `status`."""

    async def probe() -> dict[str, Any] | None:
        reply = await api.call("GET", api.ws(f"/executions/{execution_id}"))
        callback = reply.body.get("callback") if reply.status == 200 else None
        return callback if callback and callback["status"] == status else None

    return await eventually(probe, timeout=20)


def assert_signed(delivery: Delivery, secret: str) -> dict[str, Any]:
    """The delivery verifies with `secret` and was fresh when it arrived; its body."""
    problem = verify(
        secret,
        delivery.headers.get(TIMESTAMP_HEADER),
        delivery.headers.get(SIGNATURE_HEADER),
        delivery.body,
        delivery.received_at,
    )
    assert problem is None, problem
    signed_at = datetime.fromisoformat(delivery.headers[TIMESTAMP_HEADER].replace("Z", "+00:00"))
    assert abs((delivery.received_at - signed_at).total_seconds()) < 5
    assert delivery.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(delivery.body)
    return body


async def test_fails_twice_then_delivers_once_signed_and_recorded_in_order(api: Api) -> None:
    secret = await secret_of(api)
    wf = await api.create_workflow(transform("done"))
    async with receiver([500, 500]) as rec:
        started = await api.start(wf["id"], {}, callback_url=rec.url)
        ex = started["execution_id"]
        events = await settled(api, ex, "CallbackDelivered")
        assert [d.answered for d in rec.deliveries] == [500, 500, 200]
    assert len(rec.accepted) == 1
    bodies = [assert_signed(d, secret) for d in rec.deliveries]
    assert bodies[0] == bodies[1] == bodies[2]
    detail = await api.wait_terminal(ex)
    assert bodies[0] == {
        "execution_id": ex,
        "workflow_id": wf["id"],
        "workspace_id": api.workspace,
        "status": "completed",
        "output": {"v": "done"},
        "error": None,
        "closed_at": bodies[0]["closed_at"],
    }
    closed_at = datetime.fromisoformat(bodies[0]["closed_at"])
    assert closed_at == datetime.fromisoformat(detail["closed_at"])
    assert [(e["type"], e["data"]["attempt"], e["data"]["status_code"]) for e in events] == [
        ("CallbackFailed", 1, 500),
        ("CallbackFailed", 2, 500),
        ("CallbackDelivered", 3, 200),
    ]
    assert all(e["data"]["next_attempt_at"] for e in events[:2])
    shown = await callback_shown(api, ex, "delivered")
    assert shown == {"url": rec.url, "status": "delivered", "attempts": 3}
    assert [e["version"] for e in events] == sorted(e["version"] for e in events)


async def test_the_workflow_callback_url_is_used_when_the_execution_names_none(api: Api) -> None:
    secret = await secret_of(api)
    async with receiver() as for_workflow, receiver() as for_execution:
        wf = await api.create_workflow(transform("wf", callback_url=for_workflow.url))
        first = (await api.start(wf["id"], {}))["execution_id"]
        second = (await api.start(wf["id"], {}, callback_url=for_execution.url))["execution_id"]
        await settled(api, first, "CallbackDelivered")
        await settled(api, second, "CallbackDelivered")
    assert [assert_signed(d, secret)["execution_id"] for d in for_workflow.deliveries] == [first]
    assert [assert_signed(d, secret)["execution_id"] for d in for_execution.deliveries] == [second]


async def test_a_receiver_that_is_down_at_first_gets_the_result_when_it_comes_up(
    api: Api,
) -> None:
    secret = await secret_of(api)
    wf = await api.create_workflow(transform("late"))
    port = free_port()
    ex = (await api.start(wf["id"], {}, callback_url=f"http://127.0.0.1:{port}/hook"))[
        "execution_id"
    ]
    failed = await settled(api, ex, "CallbackFailed")
    assert failed[0]["data"]["status_code"] is None and failed[0]["data"]["error"]
    async with receiver(port=port) as rec:
        events = await settled(api, ex, "CallbackDelivered")
    assert len(rec.deliveries) == 1 and len(rec.accepted) == 1
    assert assert_signed(rec.deliveries[0], secret)["execution_id"] == ex
    assert {e["type"] for e in events[:-1]} == {"CallbackFailed"}
    assert [e["data"]["attempt"] for e in events] == list(range(1, len(events) + 1))


async def test_delivery_is_given_up_after_the_last_attempt(api: Api) -> None:
    wf = await api.create_workflow(transform("never"))
    async with receiver([503] * MAX_ATTEMPTS) as rec:
        ex = (await api.start(wf["id"], {}, callback_url=rec.url))["execution_id"]
        events = await settled(api, ex, "CallbackAbandoned")
    assert len(rec.deliveries) == MAX_ATTEMPTS and not rec.accepted
    assert events[-1]["data"]["attempts"] == MAX_ATTEMPTS
    last_failure = events[-2]
    assert last_failure["type"] == "CallbackFailed"
    assert last_failure["data"]["attempt"] == MAX_ATTEMPTS
    assert last_failure["data"]["next_attempt_at"] is None
    shown = await callback_shown(api, ex, "abandoned")
    assert shown == {"url": rec.url, "status": "abandoned", "attempts": MAX_ATTEMPTS}


@pytest.mark.parametrize(
    "url", ["ftp://example.com/cb", "not a url", "http://", "https://example.com/" + "x" * 2048]
)
async def test_a_bad_callback_url_is_refused_naming_the_field(api: Api, url: str) -> None:
    wf = await api.create_workflow(transform("bad"))
    reply = await api.call(
        "POST", api.ws(f"/workflows/{wf['id']}/executions"), json={"callback_url": url}
    )
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "invalid_request"
    assert [d["path"] for d in reply.body["error"]["details"]] == ["callback_url"]


async def test_the_signing_secret_is_per_workspace_and_only_for_its_members(api: Api) -> None:
    mine = await secret_of(api)
    created = await api.call("POST", "workspaces", json={"name": "second"})
    assert created.status == 201, created.body
    other = await api.call("GET", f"workspaces/{created.body['id']}/signing-secret")
    assert other.status == 200 and other.body["secret"] != mine
    stranger = Api(api.base, api.session)
    await stranger.sign_up()
    refused = await stranger.call("GET", api.ws("/signing-secret"))
    assert refused.status == 404, refused.body


async def test_the_callbacks_consumer_is_part_of_readiness(api: Api) -> None:
    reply = await api.call("GET", "/ready")
    assert reply.status == 200, reply.body
    assert reply.body["checks"]["consumer:callbacks"] == "ok"
