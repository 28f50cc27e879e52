"""The workspace event log `GET /workspaces/{ws}/events` (issue 15, item 3) on the real
PostgreSQL: every event of the workspace by position, pages that follow `next_after` up to
`head`, the filters, no credential data or key hash in any answer, the role (owner, admin,
auditor; members and viewers 403), tenancy (another workspace 404) and the 422s naming the bad
parameter."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from api import Api
from stack import eventually, roles

from domain.audit_signing import SigningKey, b64
from infra.settings import Settings

PURE = {"name": "pure", "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}]}
SECRET = "never-in-the-log-0123456789"


async def events(api: Api, **params: Any) -> dict[str, Any]:
    reply = await api.call("GET", api.ws("/events"), **params)
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def second_user(api: Api) -> Api:
    other = Api(api.base, api.session)
    await other.sign_up()
    return other


async def member_of(owner: Api, role: str) -> Api:
    """A new user with `role` in the owner's workspace (a client acting there)."""
    other = await second_user(owner)
    email = (await other.call("GET", "me")).body["user"]["email"]
    added = await owner.call("POST", owner.ws("/members"), json={"email": email, "role": role})
    assert added.status in (200, 201), added.body
    other.workspace = owner.workspace
    return other


async def test_every_event_of_the_workspace_by_position_with_its_fields(api: Api) -> None:
    workflow = await api.create_workflow(PURE)
    started = await api.start(workflow["id"], {"n": 1})
    page = await events(api)
    items = page["items"]
    positions = [i["position"] for i in items]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = [i["type"] for i in items]
    assert types[0] == "WorkspaceCreated"
    assert "WorkflowCreated" in types and "ExecutionStarted" in types
    assert page["head"] == positions[-1] == page["next_after"]
    item = next(i for i in items if i["type"] == "ExecutionStarted")
    assert item["aggregate_id"] == started["execution_id"]
    assert item["aggregate_type"] == "Execution" and item["version"] == 1
    assert item["data"]["input"] == {"n": 1} and item["recorded_at"]
    assert item["hash"] is None and item["request_id"]
    assert set(item) == {
        "position",
        "aggregate_id",
        "aggregate_type",
        "version",
        "type",
        "recorded_at",
        "actor",
        "request_id",
        "data",
        "hash",
    }
    assert not [i for i in items if i["type"] in ("UserRegistered", "TokenFamilyStarted")]


async def test_pages_follow_next_after_up_to_the_head(api: Api) -> None:
    for i in range(3):
        await api.create_workflow({**PURE, "name": f"w{i}"})
    everything = (await events(api))["items"]
    seen: list[int] = []
    after = 0
    while True:
        page = await events(api, after=after, limit=2)
        seen.extend(i["position"] for i in page["items"])
        assert len(page["items"]) <= 2
        if page["next_after"] == after:
            break
        after = page["next_after"]
    assert seen == [i["position"] for i in everything]
    assert after == page["head"] == everything[-1]["position"]


async def test_the_filters_select_by_type_aggregate_and_actor(api: Api) -> None:
    first = await api.create_workflow(PURE)
    await api.create_workflow({**PURE, "name": "second"})
    user_id = (await api.call("GET", "me")).body["user"]["id"]
    created = (await events(api, types="WorkflowCreated"))["items"]
    assert [i["type"] for i in created] == ["WorkflowCreated"] * 2
    both = (await events(api, types="WorkflowCreated,WorkspaceCreated"))["items"]
    assert {i["type"] for i in both} == {"WorkflowCreated", "WorkspaceCreated"}
    one = (await events(api, aggregate_id=first["id"]))["items"]
    assert [i["aggregate_id"] for i in one] == [first["id"]]
    by_user = (await events(api, actor_id=user_id, types="WorkflowCreated"))["items"]
    assert len(by_user) == 2
    assert (await events(api, actor_id="00000000-0000-0000-0000-000000000000"))["items"] == []


async def test_credential_data_and_key_hashes_never_appear(api: Api) -> None:
    credential = {"name": "c1", "type": "generic", "data": {"token": SECRET}}
    created = await api.call("POST", api.ws("/credentials"), json=credential)
    assert created.status == 201, created.body
    key = await api.call("POST", api.ws("/api-keys"), json={"name": "k", "role": "viewer"})
    assert key.status == 201, key.body
    reply = await api.call("GET", api.ws("/events"))
    text = json.dumps(reply.body)
    assert SECRET not in text and key.body["key"] not in text
    items = reply.body["items"]
    made = next(i for i in items if i["type"] == "CredentialCreated")
    assert "sealed_data" not in made["data"] and made["data"]["name"] == "c1"
    issued = next(i for i in items if i["type"] == "ApiKeyCreated")
    assert "secret_hash" not in issued["data"] and issued["data"]["role"] == "viewer"


async def test_bad_parameters_are_422_naming_them(api: Api) -> None:
    for params, name in (
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after": -1}, "after"),
        ({"after": "9" * 30}, "after"),
        ({"types": "ExecutionStarted,NoSuchEvent"}, "types"),
        ({"types": ""}, "types"),
        ({"aggregate_id": "nope"}, "aggregate_id"),
        ({"actor_id": "nope"}, "actor_id"),
    ):
        reply = await api.call("GET", api.ws("/events"), **params)
        assert reply.status == 422, (params, reply.body)
        assert [d["path"] for d in reply.body["error"]["details"]] == [name], reply.body
    assert len((await events(api, limit=1000))["items"]) == 1  # the largest page is allowed


async def test_auditors_owners_and_admins_read_it_members_and_viewers_do_not(api: Api) -> None:
    for role, status in (("auditor", 200), ("admin", 200), ("member", 403), ("viewer", 403)):
        other = await member_of(api, role)
        reply = await other.call("GET", other.ws("/events"))
        assert reply.status == status, (role, reply.body)


async def test_another_workspace_is_404_and_no_token_401(api: Api) -> None:
    other = await second_user(api)
    reply = await other.call("GET", api.ws("/events"))
    assert reply.status == 404, reply.body
    assert (await api.call("GET", api.ws("/events"), token="")).status == 401
    # the other's own log holds nothing of this workspace
    mine = {i["aggregate_id"] for i in (await events(api))["items"]}
    theirs = {i["aggregate_id"] for i in (await events(other))["items"]}
    assert mine.isdisjoint(theirs)


async def test_each_event_shows_its_link_in_the_hash_chain_once_chained(
    api: Api, fresh_settings: Settings
) -> None:
    """`hash` is null until the `audit` role has chained the event, then the chain's hash of
    it (`audit_chain`), for every event of the page; and a webhook's token is never shown."""
    hooked = {**PURE, "name": "hooked", "trigger": {"type": "webhook"}}
    await api.create_workflow(hooked)
    before = await events(api, limit=1000)
    assert before["items"] and all(item["hash"] is None for item in before["items"])
    assert all("webhook_token" not in item["data"] for item in before["items"])
    key = b64(SigningKey.generate().private_bytes())
    async with roles(fresh_settings.model_copy(update={"audit_signing_key": key}), "audit"):
        after = await eventually(lambda: _all_chained(api), timeout=30)
    with psycopg.connect(fresh_settings.conninfo) as conn:
        chain = dict(conn.execute("SELECT position, encode(hash, 'hex') FROM audit_chain"))
    assert [i["position"] for i in after["items"]] == [i["position"] for i in before["items"]]
    assert all(item["hash"] == chain[item["position"]] for item in after["items"])
    assert len({item["hash"] for item in after["items"]}) == len(after["items"])


async def _all_chained(api: Api) -> dict[str, Any] | None:
    page = await events(api, limit=1000)
    return page if all(item["hash"] for item in page["items"]) else None
