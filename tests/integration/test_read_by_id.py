"""Reading your own writes by id (`../shared/API.md`, "Reading your own writes"; issue 14): a
`GET` of one object right after creating it never answers 404 while the projector has not caught
up — it waits for the read model — and an id that names nothing in the workspace is still 404 at
once. An in-process gateway over real HTTP; the relay and projector start only after the reads
were sent (before, each read answered 404 at once)."""

from __future__ import annotations

import asyncio
import uuid

from api import Api, Reply
from stack import roles

from infra.settings import Settings

PURE = {
    "name": "pure",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
}


async def test_a_read_by_id_waits_for_the_projector_instead_of_answering_404(
    api: Api, fresh_settings: Settings
) -> None:
    workflow = await api.create_workflow(PURE)
    started = await api.start(workflow["id"], {})
    credential = await api.call(
        "POST", api.ws("/credentials"), json={"name": "k", "data": {"key": "s"}}
    )
    assert credential.status == 201, credential.body
    reads = [
        api.call("GET", api.ws(f"/workflows/{workflow['id']}")),
        api.call("GET", api.ws(f"/workflows/{workflow['id']}/versions")),
        api.call("GET", api.ws(f"/workflows/{workflow['id']}/versions/1")),
        api.call("GET", api.ws(f"/executions/{started['execution_id']}")),
        api.call("GET", api.ws(f"/credentials/{credential.body['id']}")),
    ]
    waiting = [asyncio.ensure_future(read) for read in reads]
    async with roles(fresh_settings, "relay", "projector"):
        answers: list[Reply] = await asyncio.gather(*waiting)
    assert [a.status for a in answers] == [200] * 5, [a.body for a in answers]
    assert answers[0].body["id"] == workflow["id"]
    assert answers[3].body["status"] == "completed"


async def test_an_id_that_names_nothing_in_the_workspace_is_404_at_once(api: Api) -> None:
    workflow = await api.create_workflow(PURE)
    other = Api(api.base, api.session)
    await other.sign_up()  # another workspace: its reads must not wait for this one's objects
    for reply in [
        await api.call("GET", api.ws(f"/workflows/{uuid.uuid4()}")),
        await api.call("GET", api.ws(f"/executions/{uuid.uuid4()}")),
        await other.call("GET", other.ws(f"/workflows/{workflow['id']}")),
        await api.call("GET", api.ws(f"/executions/{workflow['id']}")),  # another kind
    ]:
        assert reply.status == 404, reply.body
        assert reply.body["error"]["code"] == "not_found"
