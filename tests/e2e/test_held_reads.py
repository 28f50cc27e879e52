"""Starts decided on what a gateway holds in memory (`CommandContext.read`,
`lookups.held_role`) stay correct when another gateway process changes the workflow, the
variables or the membership: two gateways over real HTTP, one database."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from api import Api, signed_up
from processes import Process, free_port, stack_env

from infra.settings import Settings


@pytest.fixture(scope="module")
def second_gateway(e2e_settings: Settings, stack: tuple[str, Any]) -> Iterator[str]:
    """A second `linkflow run gateway` process beside the stack's (its own memory)."""
    port = free_port()
    proc = Process(
        "gateway",
        stack_env(e2e_settings, LINKFLOW_HTTP_PORT=str(port)),
        f"http://127.0.0.1:{port}/ready",
    )
    proc.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stop(signal.SIGTERM) == 0, proc.output()[-4000:]


def greeting(which: str) -> dict[str, Any]:
    return {
        "name": "held",
        "nodes": [
            {
                "id": "t",
                "type": "transform",
                "config": {"set": {"which": which, "greeting": "{{ vars.greeting }}"}},
            }
        ],
    }


def as_client(client: Api, base: str) -> Api:
    """The same user and workspace, through another gateway."""
    other = Api(base, client.session)
    other.token, other.workspace = client.token, client.workspace
    return other


async def test_a_start_sees_the_workflow_and_variables_another_gateway_changed(
    api: Api, second_gateway: str
) -> None:
    wf = (await api.create_workflow(greeting("one")))["id"]
    other = as_client(api, second_gateway)
    # The second gateway now holds the workspace, the workflow at version 1 and "no variables".
    first = await api.wait_terminal((await other.start(wf, {}))["execution_id"])
    assert (first["version"], first["output"]["which"]) == (1, "one")

    put = await api.call("PUT", api.ws(f"/workflows/{wf}"), json=greeting("two"))
    assert put.status == 200 and put.body["version"] == 2, put.body
    variable = await api.call("PUT", api.ws("/variables/greeting"), json={"value": "hello"})
    assert variable.status == 200, variable.body

    second = await api.wait_terminal((await other.start(wf, {}))["execution_id"])
    assert (second["version"], second["output"]) == (2, {"which": "two", "greeting": "hello"})


async def test_membership_changed_on_one_gateway_holds_on_another(
    api: Api, stack: tuple[str, Any], second_gateway: str
) -> None:
    wf = (await api.create_workflow(greeting("one")))["id"]
    async with signed_up(stack[0]) as bob:
        me = (await bob.call("GET", "me")).body["user"]
        bob_there = as_client(bob, second_gateway)
        bob_there.workspace = api.workspace
        path = bob_there.ws(f"/workflows/{wf}/executions")
        # Refused while Bob is not a member: the second gateway now holds the workspace so.
        stranger = await bob_there.call("POST", path, json={"input": {}})
        assert stranger.status == 404, stranger.body
        added = await api.call(
            "POST", api.ws("/members"), json={"email": me["email"], "role": "member"}
        )
        assert added.status == 201, added.body
        # The second gateway held the workspace without Bob, but refusals are decided on a
        # fresh read: he gets in. It now holds the workspace with Bob in it.
        assert (await bob_there.start(wf, {}))["status"] == "completed"

        removed = await api.call("DELETE", api.ws(f"/members/{me['id']}"))
        assert removed.status == 204, removed.body
        refused = await bob_there.call("POST", path, json={"input": {}})
        assert (refused.status, refused.body["error"]["code"]) == (404, "not_found")
