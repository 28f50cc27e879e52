"""Signals and approvals through the real HTTP API (issue 16, items 1 and 2): each endpoint, each
of its refusals, and executions that wait, are signalled or approved, and complete with the
roles running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from api import Api
from stack import eventually, execution_row, roles

from infra.settings import Settings
from infra.signal_urls import SignalUrls

URL_EXPRESSION = "{{ execution.signal_url.go }}"

WAIT = {
    "name": "wait",
    "nodes": [
        {"id": "w", "type": "wait_for_signal", "config": {"signal": "go"}},
        {
            "id": "t",
            "type": "transform",
            "config": {"set": {"got": "{{ nodes.w.output.payload }}"}},
        },
    ],
    "edges": [{"source": "w", "target": "t"}],
}
APPROVE = {
    "name": "approve",
    "nodes": [
        {"id": "ok", "type": "approval", "config": {"approvers": {"roles": ["owner", "admin"]}}},
        {"id": "yes", "type": "transform", "config": {"set": {"r": "approved"}}},
        {"id": "no", "type": "transform", "config": {"set": {"r": "rejected"}}},
        {"id": "later", "type": "approval", "config": {"approvers": {"roles": ["admin"]}}},
    ],
    "edges": [
        {"source": "ok", "target": "yes", "branch": "approved"},
        {"source": "ok", "target": "no", "branch": "rejected"},
        {"source": "yes", "target": "later"},
    ],
}


async def member_of(owner: Api, role: str) -> Api:
    other = Api(owner.base, owner.session)
    await other.sign_up()
    email = (await other.call("GET", "me")).body["user"]["email"]
    added = await owner.call("POST", owner.ws("/members"), json={"email": email, "role": role})
    assert added.status == 201, added.body
    other.workspace = owner.workspace
    return other


async def started(api: Api, definition: dict[str, Any]) -> str:
    workflow = await api.create_workflow(definition)
    return str((await api.start(workflow["id"], {}))["execution_id"])


async def execution(api: Api, execution_id: str) -> dict[str, Any]:
    """The execution as of its last event, folded from the event store (no projector runs
    here): the owner's time-travel read."""
    last = (await history(api, execution_id))[-1]["version"]
    path = api.ws(f"/executions/{execution_id}/state")
    reply = await api.call("GET", path, at_version=last)
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def history(api: Api, execution_id: str) -> list[dict[str, Any]]:
    reply = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    assert reply.status == 200, reply.body
    return list(reply.body)


def signal(api: Api, execution_id: str, name: str = "go", **kwargs: Any) -> Any:
    return api.call("POST", api.ws(f"/executions/{execution_id}/signals/{name}"), **kwargs)


def decide(api: Api, execution_id: str, node: str = "ok", **body: Any) -> Any:
    return api.call("POST", api.ws(f"/executions/{execution_id}/approvals/{node}"), json=body)


async def test_a_signal_completes_the_waiting_node_and_is_recorded_with_its_actor(
    api: Api,
) -> None:
    execution_id = await started(api, WAIT)
    me = (await api.call("GET", "me")).body["user"]["id"]
    sent = await signal(api, execution_id, json={"payload": {"n": 7}})
    assert sent.status == 202, sent.body
    assert sent.body["position"] > 0
    events = await history(api, execution_id)
    [received] = [e for e in events if e["type"] == "SignalReceived"]
    assert received["data"]["name"] == "go" and received["data"]["payload"] == {"n": 7}
    assert received["data"]["actor"] == {"type": "user", "id": me}
    assert events[-1]["type"] == "ExecutionCompleted"
    assert events[-1]["data"]["output"] == {"got": {"n": 7}}


async def test_a_signal_sent_early_is_kept_and_a_repeated_key_is_ignored(api: Api) -> None:
    definition = {
        "name": "early",
        "nodes": [
            {"id": "gate", "type": "approval", "config": {"approvers": {"roles": ["owner"]}}},
            {"id": "w", "type": "wait_for_signal", "config": {"signal": "go"}},
        ],
        "edges": [{"source": "gate", "target": "w"}],
        "settings": {},
    }
    definition["nodes"][0]["config"]["allow_self_approval"] = True
    execution_id = await started(api, definition)
    key = {"Idempotency-Key": "k-1"}
    first = await signal(api, execution_id, json={"payload": 1}, headers=key)
    again = await signal(api, execution_id, json={"payload": 1}, headers=key)
    assert (first.status, again.status) == (202, 202)
    assert again.body["position"] >= first.body["position"]
    decided = await decide(api, execution_id, "gate", decision="approve")
    assert decided.status == 202, decided.body
    types = [e["type"] for e in await history(api, execution_id)]
    assert types.count("SignalReceived") == 1
    assert types[-1] == "ExecutionCompleted"
    body = await execution(api, execution_id)
    assert body["status"] == "completed" and body["output"]["payload"] == 1


async def test_signal_refusals(api: Api) -> None:
    execution_id = await started(api, WAIT)
    bad_name = await signal(api, execution_id, "no%20spaces")
    assert bad_name.status == 422, bad_name.body
    assert [d["path"] for d in bad_name.body["error"]["details"]] == ["name"]
    long_name = await signal(api, execution_id, "x" * 129)
    assert long_name.status == 422
    malformed = await signal(api, execution_id, json=[1, 2])
    assert malformed.status == 422
    unknown_field = await signal(api, execution_id, json={"payload": 1, "extra": 2})
    assert unknown_field.status == 422
    assert (await signal(api, execution_id, token="")).status == 401
    viewer = await member_of(api, "viewer")
    assert (await signal(viewer, execution_id)).status == 403
    stranger = Api(api.base, api.session)
    await stranger.sign_up()
    assert (await signal(stranger, execution_id)).status == 404
    assert (await signal(api, "not-a-uuid")).status == 404
    canceled = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    assert canceled.status == 202
    closed = await signal(api, execution_id, json={"payload": 1})
    assert closed.status == 409 and closed.body["error"]["code"] == "execution_closed"


async def test_an_oversized_payload_is_refused_naming_it(api: Api) -> None:
    execution_id = await started(api, WAIT)
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    too_deep = await signal(api, execution_id, json={"payload": deep})
    assert too_deep.status == 422, too_deep.body


async def test_an_approval_by_an_approver_takes_its_branch(api: Api) -> None:
    execution_id = await started(api, APPROVE)
    admin = await member_of(api, "admin")
    waiting = await execution(api, execution_id)
    assert {n["id"]: n["status"] for n in waiting["nodes"]}["ok"] == "running"
    decided = await decide(admin, execution_id, decision="approve", comment="looks right")
    assert decided.status == 202, decided.body
    events = await history(api, execution_id)
    [approval] = [e for e in events if e["type"] == "ApprovalDecided"]
    assert approval["data"]["decision"] == "approve"
    assert approval["data"]["comment"] == "looks right"
    admin_id = (await admin.call("GET", "me")).body["user"]["id"]
    assert approval["data"]["actor"] == {"type": "user", "id": admin_id}
    body = await execution(api, execution_id)
    statuses = {n["id"]: n["status"] for n in body["nodes"]}
    assert (statuses["yes"], statuses["no"], statuses["later"]) == (
        "completed",
        "skipped",
        "running",
    )


async def test_a_rejection_takes_the_rejected_branch(api: Api) -> None:
    execution_id = await started(api, APPROVE)
    admin = await member_of(api, "admin")
    decided = await decide(admin, execution_id, decision="reject")
    assert decided.status == 202, decided.body
    body = await execution(api, execution_id)
    assert body["status"] == "completed" and body["output"] == {"r": "rejected"}


async def test_approval_refusals(api: Api) -> None:
    execution_id = await started(api, APPROVE)
    self_approval = await decide(api, execution_id, decision="approve")
    assert self_approval.status == 403, self_approval.body
    assert self_approval.body["error"]["code"] == "self_approval_refused"
    member = await member_of(api, "member")
    not_approver = await decide(member, execution_id, decision="approve")
    assert not_approver.status == 403
    assert not_approver.body["error"]["code"] == "not_an_approver"
    admin = await member_of(api, "admin")
    bad = await decide(admin, execution_id, decision="maybe")
    assert bad.status == 422
    assert [d["path"] for d in bad.body["error"]["details"]] == ["decision"]
    assert (await decide(admin, execution_id)).status == 422
    not_waiting = await decide(admin, execution_id, "later", decision="approve")
    assert not_waiting.status == 409 and not_waiting.body["error"]["code"] == "node_not_waiting"
    assert (await decide(admin, execution_id, "nope", decision="approve")).status == 404
    assert (await decide(admin, execution_id, "yes", decision="approve")).status == 404
    anonymous = await api.call(
        "POST",
        api.ws(f"/executions/{execution_id}/approvals/ok"),
        json={"decision": "approve"},
        token="",
    )
    assert anonymous.status == 401
    stranger = Api(api.base, api.session)
    await stranger.sign_up()
    stranger.workspace = api.workspace
    assert (await decide(stranger, execution_id, decision="approve")).status in (403, 404)
    stranger_own = Api(api.base, api.session)
    await stranger_own.sign_up()
    assert (await decide(stranger_own, execution_id, decision="approve")).status == 404
    await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"))
    closed = await decide(admin, execution_id, decision="approve")
    assert closed.status == 409 and closed.body["error"]["code"] == "execution_closed"


async def test_start_wait_signal_complete_with_the_roles_running(
    api: Api, fresh_settings: Settings
) -> None:
    timed = {
        "name": "timed",
        "nodes": [
            {"id": "w", "type": "wait_for_signal", "config": {"signal": "go", "timeout_s": 0.5}},
            {"id": "late", "type": "transform", "config": {"set": {"late": True}}},
        ],
        "edges": [{"source": "w", "target": "late", "branch": "timeout"}],
    }
    async with roles(fresh_settings, "relay", "projector", "timers") as r:
        execution_id = await started(api, WAIT)
        timed_out = await started(api, timed)
        row = await eventually(lambda: execution_row(r.container, execution_id))
        assert row["status"] == "running"
        assert (await signal(api, execution_id, json={"payload": "hi"})).status == 202

        async def closed(some: str) -> dict[str, Any] | None:
            row = await execution_row(r.container, some)
            return row if row and row["status"] != "running" else None

        done = await eventually(lambda: closed(execution_id))
        assert done["status"] == "completed" and done["output"] == {"got": "hi"}
        late = await eventually(lambda: closed(timed_out))
        assert late["status"] == "completed" and late["output"] == {"late": True}


BY_URL = {
    "name": "by-url",
    "nodes": [
        {"id": "share", "type": "transform", "config": {"set": {"url": URL_EXPRESSION}}},
        {"id": "w", "type": "wait_for_signal", "config": {"signal": "go"}},
    ],
    "edges": [],
}


async def test_a_signal_url_sends_the_signal_without_login(
    api: Api, fresh_settings: Settings
) -> None:
    execution_id = await started(api, BY_URL)
    events = await history(api, execution_id)
    [shared] = [e for e in events if e["type"] == "NodeCompleted"]
    url = shared["data"]["output"]["url"]
    assert url.startswith(fresh_settings.public_url + "/api/v1/signals/")
    path = url[len(fresh_settings.public_url) :]
    token = path.rsplit("/", 1)[1]
    forged = await api.call("POST", path[:-4] + "0000", token="")
    assert forged.status == 404 and forged.body["error"]["code"] == "not_found"
    assert (await api.call("POST", "/api/v1/signals/garbage", token="")).status == 404
    bad_body = await api.call("POST", path, json={"payload": 1, "name": "other"}, token="")
    assert bad_body.status == 422
    sent = await api.call("POST", path, json={"payload": {"ok": True}}, token="")
    assert sent.status == 202, sent.body
    [received] = [e for e in await history(api, execution_id) if e["type"] == "SignalReceived"]
    assert received["data"]["actor"] == {"type": "signal_url", "execution_id": execution_id}
    body = await execution(api, execution_id)
    assert body["status"] == "completed"
    assert body["output"]["w"]["payload"] == {"ok": True}
    closed = await api.call("POST", path, json={"payload": 2}, token="")
    assert closed.status == 409 and closed.body["error"]["code"] == "execution_closed"
    urls = SignalUrls(fresh_settings.secret_key, fresh_settings.public_url, 60)
    stale = urls(api.workspace or "", execution_id, "go", datetime.now(UTC) - timedelta(hours=1))
    expired = await api.call("POST", stale[len(fresh_settings.public_url) :], token="")
    assert expired.status == 401 and expired.body["error"]["code"] == "signal_url_expired"
    assert token not in str(received["data"])
