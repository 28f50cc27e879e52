"""Time travel (issue 15, item 4): `GET …/executions/{id}/state?at_version=N` answers the
execution as `GET …/executions/{id}` shows it (at the last version, once projected) and as it
was right after event N before; at_version out of range or malformed is 422 naming it; another
workspace's execution is 404; members are 403."""

from __future__ import annotations

from typing import Any

from api import Api
from stack import roles

from infra.settings import Settings

THREE = {
    "name": "three",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"x": 1}}},
        {"id": "b", "type": "transform", "config": {"set": {"y": 2}}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


async def state(api: Api, execution_id: str, **params: Any) -> Any:
    return await api.call("GET", api.ws(f"/executions/{execution_id}/state"), **params)


async def test_the_state_at_each_version_ends_as_the_get_shows_it(
    api: Api, fresh_settings: Settings
) -> None:
    workflow = await api.create_workflow(THREE)
    started = await api.start(workflow["id"], {"n": 1})
    execution_id = started["execution_id"]
    async with roles(fresh_settings, "relay", "projector"):
        shown = await api.wait_terminal(execution_id)
    history = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    last = history.body[-1]["version"]
    current = await state(api, execution_id)
    assert current.status == 200, current.body
    assert current.body == shown
    assert (await state(api, execution_id, at_version=last)).body == shown
    first = (await state(api, execution_id, at_version=1)).body
    assert first["status"] == "running" and first["closed_at"] is None
    assert first["input"] == {"n": 1} and first["output"] is None
    statuses = [
        (await state(api, execution_id, at_version=v)).body["status"] for v in range(1, last + 1)
    ]
    assert statuses[-1] == "completed" and set(statuses[:-1]) == {"running"}


async def test_at_version_out_of_range_or_malformed_is_422(api: Api) -> None:
    workflow = await api.create_workflow(THREE)
    execution_id = (await api.start(workflow["id"], {}))["execution_id"]
    history = await api.call("GET", api.ws(f"/executions/{execution_id}/history"))
    last = history.body[-1]["version"]
    for bad in (0, last + 1, -1, "x", ""):
        reply = await state(api, execution_id, at_version=bad)
        assert reply.status == 422, (bad, reply.body)
        assert [d["path"] for d in reply.body["error"]["details"]] == ["at_version"]


async def test_another_workspace_is_404_and_members_403(api: Api) -> None:
    workflow = await api.create_workflow(THREE)
    execution_id = (await api.start(workflow["id"], {}))["execution_id"]
    other = Api(api.base, api.session)
    await other.sign_up()
    assert (await other.call("GET", api.ws(f"/executions/{execution_id}/state"))).status == 404
    assert (await state(other, execution_id)).status == 404  # not in their own workspace
    assert (await state(api, workflow["id"])).status == 404  # a workflow is not an execution
    email = (await other.call("GET", "me")).body["user"]["email"]
    added = await api.call("POST", api.ws("/members"), json={"email": email, "role": "member"})
    assert added.status in (200, 201), added.body
    other.workspace = api.workspace
    assert (await state(other, execution_id)).status == 403
