"""The workspace event log `GET /workspaces/{ws}/events` (issue 15, item 3) on the real
PostgreSQL: every event of the workspace by position, pages that follow `next_after` up to
`head`, the filters, no credential data or key hash in any answer, the role (owner, admin,
auditor; members and viewers 403), tenancy (another workspace 404) and the 422s naming the bad
parameter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from api import Api
from psycopg.rows import dict_row
from stack import eventually, roles

from domain.audit_signing import SigningKey, b64
from domain.definition import parse_definition
from domain.execution import Execution
from infra.eventstore import EVENTS_TABLE, EventStore
from infra.settings import Settings
from projections import audit_log
from projections.queries import history_entry

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


HTTP_NODE = {"method": "GET", "url": "http://127.0.0.1:9/never"}
LIFECYCLE = {
    "name": "lifecycle",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
        {"id": "b", "type": "http_request", "config": HTTP_NODE, "retry": {"max_attempts": 3}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


def _lifecycle_events(store: EventStore, workspace: str) -> list[dict[str, Any]]:
    """Stored rows of executions made by the domain: nodes started, completed, failed and
    retried, a timer fired, a callback attempt, a cancel — the events the API alone does not
    make without workers."""
    now = datetime.now(UTC)
    definition = parse_definition(LIFECYCLE).to_json()
    done = Execution.start(
        uuid4(),
        workspace,
        str(uuid4()),
        1,
        definition,
        {"n": 1.5, "deep": [[{"x": None}]]},
        now,
        callback_url="https://example.com/cb",
    )
    done.start_node("a", 1, now)
    done.complete_node("a", 1, {"n": 1.5, "ok": True}, now)
    done.start_node("b", 1, now)
    done.fail_node("b", 1, {"type": "http", "message": "refused"}, now)
    for timer in list(done.timers):
        done.fire_timer(timer, now + timedelta(seconds=5))
    done.start_node("b", 2, now)
    done.fail_node("b", 2, {"type": "http", "message": "refused"}, now, retryable=False)
    done.record_callback_attempt(1, 500, "bad gateway", now + timedelta(seconds=1), now)
    canceled = Execution.start(uuid4(), workspace, str(uuid4()), 1, definition, [], now)
    canceled.cancel("no longer needed", now)
    rows = []
    for event in [*done.collect_events(), *canceled.collect_events()]:
        stored = store.mapper.to_stored_event(event)
        rows.append(
            {
                "originator_id": stored.originator_id,
                "originator_version": stored.originator_version,
                "topic": stored.topic,
                "state": stored.state,
            }
        )
    return rows


async def test_the_fast_rendering_is_the_historys_on_every_kind_of_event(
    api: Api, fresh_settings: Settings
) -> None:
    """`audit_log.fast_entry` (orjson, no domain decoding) answers exactly what the history's
    rendering (`queries.history_entry`, decoding the domain event) answers, on the events of
    every aggregate a workspace holds and on an execution's whole lifecycle."""
    hooked = {**PURE, "name": "hooked", "trigger": {"type": "webhook"}}
    workflow = await api.create_workflow(hooked)
    published = await api.call(
        "PUT", api.ws(f"/workflows/{workflow['id']}"), json={**hooked, "name": "h2"}
    )
    assert published.status == 200, published.body
    await api.call("POST", api.ws(f"/workflows/{workflow['id']}/activate"))
    await api.start(workflow["id"], {"n": 1})
    credential = {"name": "c", "type": "http_header", "data": {"name": "X-K", "value": SECRET}}
    await api.call("POST", api.ws("/credentials"), json=credential)
    await api.call("POST", api.ws("/api-keys"), json={"name": "k", "role": "viewer"})
    await api.call("PUT", api.ws("/variables/region"), json={"value": "eu"})
    await member_of(api, "viewer")
    with psycopg.connect(fresh_settings.conninfo, row_factory=dict_row) as conn:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {EVENTS_TABLE}"
            " WHERE workspace_id = %s ORDER BY notification_id",
            (api.workspace,),
        ).fetchall()
    store = EventStore(fresh_settings)
    try:
        rows += _lifecycle_events(store, api.workspace)
        types = set()
        for row in rows:
            fast = audit_log.fast_entry(row)
            slow = history_entry(store, row["originator_id"], row)
            assert fast is not None, row["topic"]
            fast.pop("workspace_id"), slow.pop("workspace_id")
            assert fast == slow, row["topic"]
            types.add(fast["type"])
    finally:
        store.close()
    assert {
        "WorkspaceCreated",
        "MemberAdded",
        "WorkflowCreated",
        "WorkflowVersionPublished",
        "WorkflowActivated",
        "WebhookTokenIssued",
        "ExecutionStarted",
        "CredentialCreated",
        "ApiKeyCreated",
        "VariableSet",
        "NodeStarted",
        "NodeCompleted",
        "NodeFailed",
        "TimerScheduled",
        "TimerFired",
        "ExecutionFailed",
        "CallbackFailed",
        "ExecutionCanceled",
    } <= types, types
