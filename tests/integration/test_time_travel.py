"""Time travel (issue 15, item 4): `GET …/executions/{id}/state?at_version=N` answers the
execution as `GET …/executions/{id}` shows it (at the last version, once projected) and as it
was right after event N before; at_version out of range or malformed is 422 naming it; another
workspace's execution is 404; members are 403."""

from __future__ import annotations

from typing import Any

from api import Api
from callback_receiver import receiver
from stack import eventually, roles

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


async def test_the_callback_is_shown_as_it_was_at_each_version(
    api: Api, fresh_settings: Settings
) -> None:
    """The callback events (applied by the projector after the execution's row) are folded
    too: before the first attempt the callback is pending with no attempts, after the failed
    one pending with 1, after the delivery delivered with 2, as the GET shows it."""
    settings = fresh_settings.model_copy(
        update={"callback_backoff_s": 0.05, "callback_backoff_max_s": 0.1}
    )
    workflow = await api.create_workflow(THREE)
    async with receiver([500]) as rec, roles(settings, "relay", "projector", "callbacks"):
        started = await api.start(workflow["id"], {"n": 1}, callback_url=rec.url)
        execution_id = started["execution_id"]
        shown = await eventually(lambda: _delivered(api, execution_id), timeout=30)
    history = (await api.call("GET", api.ws(f"/executions/{execution_id}/history"))).body
    versions = {entry["type"]: entry["version"] for entry in history}
    assert (await state(api, execution_id)).body == shown
    callbacks = [
        (await state(api, execution_id, at_version=versions[kind] - offset)).body["callback"]
        for kind, offset in (("CallbackFailed", 1), ("CallbackFailed", 0), ("CallbackDelivered", 0))
    ]
    assert [(c["status"], c["attempts"]) for c in callbacks] == [
        ("pending", 0),
        ("pending", 1),
        ("delivered", 2),
    ]
    assert callbacks[-1] == shown["callback"]


async def _delivered(api: Api, execution_id: str) -> dict[str, Any] | None:
    reply = await api.call("GET", api.ws(f"/executions/{execution_id}"))
    callback = reply.body.get("callback") if reply.status == 200 else None
    return reply.body if callback and callback["status"] == "delivered" else None


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


async def workflow_state(api: Api, workflow_id: str, **params: Any) -> Any:
    return await api.call("GET", api.ws(f"/workflows/{workflow_id}/state"), **params)


async def test_a_workflows_state_at_each_version_ends_as_the_get_shows_it(
    api: Api, fresh_settings: Settings
) -> None:
    """Created (1), version 2 published (2), activated (3), deactivated (4), archived (5)."""
    workflow = await api.create_workflow(THREE)
    wf = workflow["id"]
    path = api.ws(f"/workflows/{wf}")
    renamed = {**THREE, "name": "three, renamed"}
    assert (await api.call("PUT", path, json=renamed)).status in (200, 201)
    assert (await api.call("POST", f"{path}/activate", json={"version": 2})).status == 200
    assert (await api.call("POST", f"{path}/deactivate")).status == 200
    assert (await api.call("DELETE", path)).status in (200, 204)
    async with roles(fresh_settings, "relay", "projector"):
        shown = await eventually(lambda: _archived(api, path))
    assert (await workflow_state(api, wf)).body == shown
    states = [(await workflow_state(api, wf, at_version=v)).body for v in range(1, 6)]
    assert states[-1] == shown
    assert [s["version"] for s in states] == [1, 2, 2, 2, 2]
    assert [s["name"] for s in states] == ["three"] + ["three, renamed"] * 4
    assert [s["active_version"] for s in states] == [None, None, 2, None, None]
    assert [s["archived"] for s in states] == [False, False, False, False, True]
    assert [s["definition"]["name"] for s in states[:2]] == ["three", "three, renamed"]
    for bad in (0, 6, "x"):
        reply = await workflow_state(api, wf, at_version=bad)
        assert reply.status == 422, (bad, reply.body)
        assert [d["path"] for d in reply.body["error"]["details"]] == ["at_version"]
    other = Api(api.base, api.session)
    await other.sign_up()
    assert (await other.call("GET", api.ws(f"/workflows/{wf}/state"))).status == 404
    assert (await workflow_state(other, wf)).status == 404  # not in their own workspace


async def _archived(api: Api, path: str) -> dict[str, Any] | None:
    reply = await api.call("GET", path)
    return reply.body if reply.status == 200 and reply.body["archived"] else None
