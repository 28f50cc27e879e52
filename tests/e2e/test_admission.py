"""Back-pressure at the door: a workspace with LINKFLOW_MAX_QUEUED_PER_WORKSPACE executions open
gets 429 `too_many_executions` with Retry-After for further starts (API and webhook), other
workspaces do not, a repeated start of an accepted execution is still answered, and starts are
admitted again once executions close (issue 12, defect 1: every start was accepted however deep
the backlog)."""

from __future__ import annotations

import asyncio
import time

import pytest
from api import Api, signed_up

LIMIT = 5
PARKED = {
    "name": "parked",
    "trigger": {"type": "webhook"},
    "nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 600}}],
}


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    return {"LINKFLOW_MAX_QUEUED_PER_WORKSPACE": str(LIMIT)}


async def _refused(api: Api, workflow_id: str, **headers: str) -> bool:
    reply = await api.call(
        "POST", api.ws(f"/workflows/{workflow_id}/executions"), json={}, headers=headers
    )
    return reply.status == 429


async def test_starts_past_the_cap_are_refused_until_executions_close(api: Api) -> None:
    wf = await api.create_workflow(PARKED)
    accepted = []
    for i in range(LIMIT):
        reply = await api.call(
            "POST",
            api.ws(f"/workflows/{wf['id']}/executions"),
            json={"input": {"i": i}},
            headers={"Idempotency-Key": f"k{i}"},
        )
        assert reply.status == 202, reply.body
        accepted.append(reply.body["execution_id"])

    refused = await api.call("POST", api.ws(f"/workflows/{wf['id']}/executions"), json={})
    assert refused.status == 429, refused.body
    assert refused.body["error"]["code"] == "too_many_executions"
    assert int(refused.headers["Retry-After"]) >= 1

    # A webhook start of the same workspace is refused the same way.
    activated = await api.call("POST", api.ws(f"/workflows/{wf['id']}/activate"), json={})
    assert activated.status == 200, activated.body
    hook = await api.call("POST", f"/api/v1/hooks/{wf['webhook']['token']}", json={"x": 1})
    assert hook.status == 429, hook.body

    # What was accepted is kept, and its repeat is answered (not refused).
    again = await api.call(
        "POST",
        api.ws(f"/workflows/{wf['id']}/executions"),
        json={"input": {"i": 0}},
        headers={"Idempotency-Key": "k0"},
    )
    assert (again.status, again.body["execution_id"]) == (202, accepted[0])
    for execution_id in accepted:
        reply = await api.call("GET", api.ws(f"/executions/{execution_id}"))
        assert (reply.status, reply.body["status"]) == (200, "running")

    # Another workspace is not affected.
    async with signed_up(api.base) as other:
        theirs = await other.create_workflow(PARKED)
        await other.start(theirs["id"], {})

    # Closing executions frees room (once the read model has seen the closings).
    for execution_id in accepted[:2]:
        reply = await api.call("POST", api.ws(f"/executions/{execution_id}/cancel"), json={})
        assert reply.status == 202
    deadline = time.monotonic() + 10
    while await _refused(api, wf["id"]):
        assert time.monotonic() < deadline, "starts stayed refused after executions closed"
        await asyncio.sleep(0.05)
