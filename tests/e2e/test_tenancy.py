"""Tenancy: two workspaces with the same kinds of things. Through every read and write path, each
workspace's caller names the other's ids (in its own workspace's paths, and in the other's); every
such request is 404, lists show only their own rows, and the other's data is unchanged."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from api import Api, signed_up

WORKFLOW = {"name": "t", "nodes": [{"id": "a", "type": "transform", "config": {"set": {"x": 1}}}]}

# Paths naming one object ({wf}, {id}: execution, {user_id}: member, {key_id}: API key).
OBJECT_PATHS = [
    ("GET", "/workflows/{wf}", None),
    ("PUT", "/workflows/{wf}", WORKFLOW),
    ("DELETE", "/workflows/{wf}", None),
    ("GET", "/workflows/{wf}/versions", None),
    ("GET", "/workflows/{wf}/versions/1", None),
    ("POST", "/workflows/{wf}/activate", None),
    ("POST", "/workflows/{wf}/deactivate", None),
    ("POST", "/workflows/{wf}/executions", {"input": {}}),
    ("GET", "/executions/{id}", None),
    ("GET", "/executions/{id}/history", None),
    ("POST", "/executions/{id}/cancel", None),
    ("PATCH", "/members/{user_id}", {"role": "admin"}),
    ("DELETE", "/members/{user_id}", None),
    ("DELETE", "/api-keys/{key_id}", None),
    ("GET", "/credentials/{cred}", None),
    ("PUT", "/credentials/{cred}", {"data": {"token": "overwritten"}}),
    ("DELETE", "/credentials/{cred}", None),
]
LIST_PATHS = ["/workflows", "/executions", "/members", "/api-keys", "/credentials", "/variables"]


async def tenant(base: str, api: Api) -> dict[str, Any]:
    """A workspace holding a workflow, a running execution, a second member and an API key."""
    delayed = {"name": "slow", "nodes": [{"id": "d", "type": "delay", "config": {"seconds": 3600}}]}
    wf = await api.create_workflow(delayed)
    ex = await api.start(wf["id"], {"secret_of": api.workspace})
    async with signed_up(base) as friend:
        email = (await friend.call("GET", "me")).body["user"]["email"]
        friend_id = (await friend.call("GET", "me")).body["user"]["id"]
    added = await api.call("POST", api.ws("/members"), json={"email": email, "role": "viewer"})
    assert added.status == 201
    key = await api.call("POST", api.ws("/api-keys"), json={"name": "k", "role": "admin"})
    tag = uuid.uuid4().hex[:8]
    cred = await api.call(
        "POST", api.ws("/credentials"), json={"name": f"c{tag}", "data": {"token": f"t{tag}"}}
    )
    assert cred.status == 201, cred.body
    var = await api.call("PUT", api.ws(f"/variables/v{tag}"), json={"value": tag})
    assert var.status == 200, var.body
    return {
        "cred": cred.body["id"],
        "var": f"v{tag}",
        "wf": wf["id"],
        "id": ex["execution_id"],
        "user_id": friend_id,
        "key_id": key.body["id"],
        "key": key.body["key"],
        "position": key.body["position"],
    }


@pytest.fixture(scope="module")
async def tenants(stack: tuple[str, Any]) -> Any:
    async with signed_up(stack[0]) as a, signed_up(stack[0]) as b:
        yield (a, await tenant(stack[0], a)), (b, await tenant(stack[0], b))


@pytest.mark.parametrize(("method", "path", "body"), OBJECT_PATHS, ids=lambda v: str(v))
async def test_no_path_reaches_the_other_workspace(
    tenants: Any, method: str, path: str, body: Any
) -> None:
    (a, a_ids), (b, b_ids) = tenants
    for me, mine, theirs, their_ws in (
        (a, a_ids, b_ids, b.workspace),
        (b, b_ids, a_ids, a.workspace),
    ):
        other = path.format(**theirs)
        in_mine = await me.call(method, me.ws(other), json=body)
        assert in_mine.status == 404, (method, other, in_mine.body)
        in_theirs = await me.call(method, f"workspaces/{their_ws}{other}", json=body)
        assert in_theirs.status == 404, (method, other, in_theirs.body)
        as_key = await me.call(method, me.ws(other), json=body, token=mine["key"])
        assert as_key.status == 404, (method, other, as_key.body)
        assert str(theirs[_field(path)]) not in str(in_mine.body) + str(in_theirs.body)


def _field(path: str) -> str:
    return next(f for f in ("wf", "id", "user_id", "key_id", "cred") if "{" + f + "}" in path)


async def test_lists_show_only_their_own_rows(tenants: Any) -> None:
    (a, a_ids), (b, b_ids) = tenants
    for me, mine, theirs in ((a, a_ids, b_ids), (b, b_ids, a_ids)):
        for path in LIST_PATHS:
            reply = await me.call("GET", me.ws(path), min_position=mine["position"])
            assert reply.status == 200, reply.body
            text = str(reply.body)
            assert not any(str(theirs[f]) in text for f in ("wf", "id", "key_id", "cred", "var")), (
                path
            )
        execs = await me.call("GET", me.ws("/executions"), min_position=mine["position"])
        assert [item["id"] for item in execs.body["items"]] == [mine["id"]]


async def test_the_other_workspace_is_unchanged(tenants: Any) -> None:
    """After every cross-tenant write above was refused, each tenant's things are intact."""
    (a, a_ids), (b, b_ids) = tenants
    for me, mine in ((a, a_ids), (b, b_ids)):
        ex = await me.call("GET", me.ws(f"/executions/{mine['id']}"), min_position=mine["position"])
        assert ex.body["status"] == "running"
        wf = await me.call("GET", me.ws(f"/workflows/{mine['wf']}"))
        assert wf.body["version"] == 1 and not wf.body["archived"]
        members = {m["user_id"]: m["role"] for m in (await me.call("GET", me.ws("/members"))).body}
        assert members[mine["user_id"]] == "viewer"
        assert (await me.call("GET", me.ws("/workflows"), token=mine["key"])).status == 200
        cred = await me.call("GET", me.ws(f"/credentials/{mine['cred']}"))
        assert cred.status == 200 and cred.body["updated_at"] == cred.body["created_at"]
        variables = (await me.call("GET", me.ws("/variables"))).body
        assert variables == {mine["var"]: mine["var"][1:]}
