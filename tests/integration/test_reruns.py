"""Re-runs and error workflows over the real HTTP API, PostgreSQL and Redis (issue 16, items 5
and 6): `POST …/executions/{id}/rerun` (from a node, reusing its ancestors' outputs; on the
original's or the latest version; with a new input) and every refusal; the bulk
`POST …/executions/rerun` by `q` (closed executions only, at most MAX_BULK_RERUN, idempotent with
an Idempotency-Key) and its refusals; `settings.error_workflow_id` refused at save time when it
names no usable workflow of the workspace. Workflows here are transforms only, decided inline,
so the relay and the projector are the only roles needed (the e2e test with workers and the
error-workflow consumer is `tests/integration/test_reruns_stack.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from api import Api
from stack import roles

from infra.settings import Settings

# a → b → c; b fails when trigger.v has no length (a number), c reads a and b.
CHAIN = {
    "name": "chain",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
        {"id": "b", "type": "transform", "config": {"set": {"len": "{{ length(trigger.v) }}"}}},
        {
            "id": "c",
            "type": "transform",
            "config": {"set": {"n": "{{ nodes.a.output.n }}", "len": "{{ nodes.b.output.len }}"}},
        },
    ],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
}
# Never closes without a worker (none runs here).
WAITING = {
    "name": "waiting",
    "nodes": [{"id": "h", "type": "http_request", "config": {"url": "http://127.0.0.1:9/x"}}],
}


@pytest.fixture
async def owner(api: Api, fresh_settings: Settings) -> AsyncIterator[Api]:
    async with roles(fresh_settings, "relay", "projector"):
        yield api


async def other(api: Api) -> Api:
    stranger = Api(api.base, api.session)
    await stranger.sign_up()
    return stranger


async def failed_chain(api: Api) -> tuple[str, str]:
    """The chain's workflow and a failed execution of it (b failed, c skipped)."""
    workflow = await api.create_workflow(CHAIN)
    started = await api.start(workflow["id"], {"n": 1, "v": 5})
    assert started["status"] == "failed"
    return workflow["id"], started["execution_id"]


async def rerun(api: Api, execution_id: str, body: Any = None, **headers: str) -> Any:
    return await api.call(
        "POST", api.ws(f"/executions/{execution_id}/rerun"), json=body, headers=headers
    )


async def read(api: Api, execution_id: str, position: int) -> dict[str, Any]:
    reply = await api.call("GET", api.ws(f"/executions/{execution_id}"), min_position=position)
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


def nodes(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in execution["nodes"]}


async def test_a_rerun_from_the_failed_node_reuses_upstream_outputs(owner: Api) -> None:
    _, original = await failed_chain(owner)
    reply = await rerun(owner, original, {"from_node": "b", "input": {"n": 2, "v": "abc"}})
    assert reply.status == 202, reply.body
    assert set(reply.body) == {"execution_id", "position"}
    new = await read(owner, reply.body["execution_id"], reply.body["position"])
    assert (new["status"], new["trigger"], new["rerun_of"]) == ("completed", "rerun", original)
    assert new["input"] == {"n": 2, "v": "abc"}
    runs = nodes(new)
    # a kept the original's output (n = 1, not the new input's 2) and is shown as reused.
    assert (runs["a"]["reused"], runs["a"]["output"], runs["a"]["attempts"]) == (True, {"n": 1}, 0)
    assert (runs["b"]["reused"], runs["b"]["output"]) == (False, {"len": 3})
    assert new["output"] == {"n": 1, "len": 3}
    listed = await owner.call(
        "GET",
        owner.ws("/executions"),
        q=f"rerun_of = '{original}'",
        min_position=reply.body["position"],
    )
    assert [i["id"] for i in listed.body["items"]] == [new["id"]]
    assert listed.body["items"][0]["rerun_of"] == original
    assert (await read(owner, original, 0))["rerun_of"] is None
    history = await owner.call("GET", owner.ws(f"/executions/{new['id']}/history"))
    reused = [e["data"] for e in history.body if e["type"] == "NodeReused"]
    assert [(e["node_id"], e["output"]) for e in reused] == [("a", {"n": 1})]
    # Time travel folds NodeReused like the projector: right after it, a is shown reused.
    state = await owner.call("GET", owner.ws(f"/executions/{new['id']}/state"), at_version=2)
    assert state.status == 200, state.body
    assert nodes(state.body)["a"]["reused"] and state.body["rerun_of"] == original
    # Its events record who re-ran it (the request's actor and id).
    events = await owner.call("GET", owner.ws("/events"), aggregate_id=new["id"])
    assert events.status == 200, events.body
    me = (await owner.call("GET", "me")).body["user"]["id"]
    assert {(e["actor"]["type"], e["actor"]["id"]) for e in events.body["items"]} == {("user", me)}
    assert all(e["request_id"] for e in events.body["items"])


async def test_a_rerun_without_from_node_runs_everything_with_the_same_input(owner: Api) -> None:
    _, original = await failed_chain(owner)
    reply = await rerun(owner, original)
    assert reply.status == 202, reply.body
    new = await read(owner, reply.body["execution_id"], reply.body["position"])
    assert (new["status"], new["input"], new["rerun_of"]) == ("failed", {"n": 1, "v": 5}, original)
    assert not any(n["reused"] for n in new["nodes"])


async def test_version_latest_reruns_on_the_workflows_newest_definition(owner: Api) -> None:
    workflow, original = await failed_chain(owner)
    latest = dict(
        CHAIN,
        nodes=[*CHAIN["nodes"], {"id": "d", "type": "transform", "config": {"set": {"d": 1}}}],
    )
    latest["edges"] = [*CHAIN["edges"], {"source": "a", "target": "d"}]
    updated = await owner.call("PUT", owner.ws(f"/workflows/{workflow}"), json=latest)
    assert updated.status == 200, updated.body
    # d exists only in the latest version.
    refused = await rerun(owner, original, {"from_node": "d"})
    assert refused.status == 422 and refused.body["error"]["details"][0]["path"] == "from_node"
    reply = await rerun(
        owner, original, {"from_node": "d", "version": "latest", "input": {"n": 3, "v": "xy"}}
    )
    assert reply.status == 202, reply.body
    new = await read(owner, reply.body["execution_id"], reply.body["position"])
    assert (new["version"], new["status"]) == (2, "completed")
    assert nodes(new)["a"]["reused"] and nodes(new)["d"]["output"] == {"d": 1}


async def test_rerun_refusals(owner: Api) -> None:
    _, original = await failed_chain(owner)
    waiting = await owner.create_workflow(WAITING)
    running = (await owner.start(waiting["id"], {}))["execution_id"]

    busy = await rerun(owner, running)
    assert (busy.status, busy.body["error"]["code"]) == (409, "execution_running")
    unknown = await rerun(owner, original, {"from_node": "nope"})
    assert (unknown.status, unknown.body["error"]["details"][0]["path"]) == (422, "from_node")
    no_output = await rerun(owner, original, {"from_node": "c"})  # its ancestor b failed
    assert no_output.status == 422 and "'b'" in no_output.body["error"]["details"][0]["message"]
    malformed = await rerun(owner, original, {"version": "newest"})
    assert (malformed.status, malformed.body["error"]["details"][0]["path"]) == (422, "version")
    extra = await rerun(owner, original, {"execution_id": original})
    assert extra.status == 422
    anonymous = await owner.call("POST", owner.ws(f"/executions/{original}/rerun"), token="")
    assert (anonymous.status, anonymous.body["error"]["code"]) == (401, "unauthenticated")

    stranger = await other(owner)
    theirs = await stranger.call("POST", owner.ws(f"/executions/{original}/rerun"))
    assert (theirs.status, theirs.body["error"]["code"]) == (404, "not_found")
    # Their own workspace does not have it either.
    mine = await stranger.call("POST", stranger.ws(f"/executions/{original}/rerun"))
    assert (mine.status, mine.body["error"]["code"]) == (404, "not_found")
    email = (await stranger.call("GET", "me")).body["user"]["email"]
    added = await owner.call("POST", owner.ws("/members"), json={"email": email, "role": "viewer"})
    assert added.status == 201, added.body
    viewer = await stranger.call("POST", owner.ws(f"/executions/{original}/rerun"))
    assert (viewer.status, viewer.body["error"]["code"]) == (403, "forbidden")


async def test_a_keyed_rerun_is_made_once(owner: Api) -> None:
    _, original = await failed_chain(owner)
    first = await rerun(owner, original, None, **{"Idempotency-Key": "k1"})
    again = await rerun(owner, original, None, **{"Idempotency-Key": "k1"})
    assert first.status == again.status == 202
    assert first.body["execution_id"] == again.body["execution_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"


async def bulk(api: Api, body: Any, min_position: int | None = None, **headers: str) -> Any:
    return await api.call(
        "POST",
        api.ws("/executions/rerun"),
        json=body,
        headers=headers,
        min_position=min_position,
    )


async def test_bulk_rerun_of_every_matching_closed_execution(
    owner: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, first = await failed_chain(owner)
    second = (await owner.start(workflow, {"n": 2, "v": 7}))["execution_id"]
    done = await owner.start(workflow, {"n": 3, "v": "ok"})
    assert done["status"] == "completed"
    waiting = await owner.create_workflow(WAITING)
    last = (await owner.start(waiting["id"], {}))["position"]  # running: never re-run
    q = "status IN ('failed', 'running') AND version = 1"
    reply = await bulk(owner, {"q": q}, min_position=last, **{"Idempotency-Key": "bulk-1"})
    assert reply.status == 202, reply.body
    assert reply.body["count"] == 2 and len(reply.body["execution_ids"]) == 2
    position = reply.body["position"]
    reruns = [await read(owner, i, position) for i in reply.body["execution_ids"]]
    assert sorted(r["rerun_of"] for r in reruns) == sorted([first, second])
    assert {r["trigger"] for r in reruns} == {"rerun"}
    # The re-runs failed too and now match: a repeat with the key answers the first ids.
    listed = await owner.call(
        "GET", owner.ws("/executions"), q="status = 'failed'", min_position=position
    )
    assert len(listed.body["items"]) == 4
    again = await bulk(owner, {"q": q}, **{"Idempotency-Key": "bulk-1"})
    assert again.status == 202 and again.body["execution_ids"] == reply.body["execution_ids"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    # Even once the filter matches more than a request may re-run, the repeat's answer stands.
    monkeypatch.setattr("gateways.http.routes_reruns.MAX_BULK_RERUN", 1)
    still = await bulk(owner, {"q": q}, **{"Idempotency-Key": "bulk-1"})
    assert still.status == 202 and still.body["execution_ids"] == reply.body["execution_ids"]
    nothing = await bulk(owner, {"q": "status = 'canceled'"})
    assert (nothing.status, nothing.body["count"], nothing.body["execution_ids"]) == (202, 0, [])


async def test_bulk_rerun_refusals(owner: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow, _ = await failed_chain(owner)
    at = (await owner.start(workflow, {"n": 2, "v": 7}))["position"]
    await owner.call("GET", owner.ws("/executions"), min_position=at)  # projected
    monkeypatch.setattr("gateways.http.routes_reruns.MAX_BULK_RERUN", 1)
    too_many = await bulk(owner, {"q": "status = 'failed'"})
    assert (too_many.status, too_many.body["error"]["code"]) == (422, "too_many_matches")
    assert too_many.body["error"]["details"][0]["path"] == "q"
    bad_q = await bulk(owner, {"q": "status = "})
    assert (bad_q.status, bad_q.body["error"]["code"]) == (422, "invalid_query")
    no_q = await bulk(owner, {})
    assert (no_q.status, no_q.body["error"]["details"][0]["path"]) == (422, "q")
    anonymous = await owner.call(
        "POST", owner.ws("/executions/rerun"), json={"q": "x = 1"}, token=""
    )
    assert anonymous.status == 401
    stranger = await other(owner)
    theirs = await bulk(stranger, {"q": "status = 'failed'"})  # their own workspace: nothing
    assert (theirs.status, theirs.body["count"]) == (202, 0)
    hidden = await stranger.call(
        "POST", owner.ws("/executions/rerun"), json={"q": "status = 'failed'"}
    )
    assert (hidden.status, hidden.body["error"]["code"]) == (404, "not_found")
    email = (await stranger.call("GET", "me")).body["user"]["email"]
    await owner.call("POST", owner.ws("/members"), json={"email": email, "role": "viewer"})
    viewer = await stranger.call(
        "POST", owner.ws("/executions/rerun"), json={"q": "status = 'failed'"}
    )
    assert (viewer.status, viewer.body["error"]["code"]) == (403, "forbidden")


async def test_an_error_workflow_that_cannot_be_started_is_refused_when_saved(api: Api) -> None:
    def failing(error_workflow_id: str) -> dict[str, Any]:
        return dict(CHAIN, settings={"error_workflow_id": error_workflow_id})

    unknown = await api.call(
        "POST", api.ws("/workflows"), json=failing("6b5c3f3e-0000-4000-8000-000000000000")
    )
    assert (unknown.status, unknown.body["error"]["code"]) == (422, "invalid_definition")
    assert unknown.body["error"]["details"][0]["path"] == "settings.error_workflow_id"
    not_a_uuid = await api.call("POST", api.ws("/workflows"), json=failing("handler"))
    assert not_a_uuid.status == 422
    stranger = await other(api)
    theirs = await stranger.create_workflow(dict(CHAIN, name="theirs"))
    other_ws = await api.call("POST", api.ws("/workflows"), json=failing(theirs["id"]))
    assert other_ws.status == 422
    handler = await api.create_workflow(dict(CHAIN, name="handler"))
    archived = await api.call("DELETE", api.ws(f"/workflows/{handler['id']}"))
    assert archived.status == 200, archived.body
    refused = await api.call("POST", api.ws("/workflows"), json=failing(handler["id"]))
    assert refused.status == 422 and "archived" in refused.body["error"]["details"][0]["message"]
    usable = await api.create_workflow(dict(CHAIN, name="handler 2"))
    saved = await api.call("POST", api.ws("/workflows"), json=failing(usable["id"]))
    assert saved.status == 201, saved.body
    assert saved.body["definition"]["settings"]["error_workflow_id"] == usable["id"]
