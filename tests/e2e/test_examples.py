"""The example workflows of ../shared/examples, run over HTTP to their documented outcomes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from api import Api
from examples import load_example
from stack import eventually


def nodes_by_id(execution: dict) -> dict[str, dict]:
    return {n["id"]: n for n in execution["nodes"]}


@pytest.mark.parametrize("example", ["order-followup.json", "linkflow-export.json"])
async def test_paid_order(api: Api, target: str, example: str) -> None:
    wf = await api.create_workflow(load_example(example))
    started = await api.start(wf["id"], {"base_url": target, "order_id": 42})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    assert done["output"] == {"order": 42, "total": 420}
    assert nodes_by_id(done)["unpaid"]["status"] == "skipped"


async def test_unpaid_order(api: Api, target: str) -> None:
    wf = await api.create_workflow(load_example("order-followup.json"))
    started = await api.start(wf["id"], {"base_url": target, "order_id": 7})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    assert done["output"] == {"reason": "unpaid", "order": 7}
    nodes = nodes_by_id(done)
    assert nodes["wait"]["status"] == "skipped" and nodes["shape"]["status"] == "skipped"


async def test_retry_then_succeed(api: Api, target: str) -> None:
    wf = await api.create_workflow(load_example("retry-then-succeed.json"))
    key = uuid.uuid4().hex
    started = await api.start(wf["id"], {"base_url": target, "key": key})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    assert nodes_by_id(done)["call"]["attempts"] == 3
    assert done["output"] == {"ok": True, "key": key}


async def test_fan_out_and_join(api: Api, target: str) -> None:
    wf = await api.create_workflow(load_example("fan-out-join.json"))
    started = await api.start(wf["id"], {"base_url": target})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    assert done["output"] == {"total": 9}


async def test_continue_on_error(api: Api, target: str) -> None:
    wf = await api.create_workflow(load_example("continue-on-error.json"))
    started = await api.start(wf["id"], {"base_url": target})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "completed"
    nodes = nodes_by_id(done)
    assert (nodes["lookup"]["status"], nodes["use"]["status"], nodes["side"]["status"]) == (
        "failed",
        "skipped",
        "completed",
    )
    assert done["output"] == {"side": "done"}


async def test_node_timeout(api: Api, target: str) -> None:
    wf = await api.create_workflow(load_example("timeout.json"))
    started = await api.start(wf["id"], {"base_url": target})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "failed"
    slow = nodes_by_id(done)["slow"]
    assert slow["status"] == "timed_out"
    took = datetime.fromisoformat(slow["closed_at"]) - datetime.fromisoformat(slow["started_at"])
    assert 0.9 <= took.total_seconds() <= 2.0, took


async def test_wait_for_signal_received_and_timed_out(api: Api) -> None:
    wf = await api.create_workflow(load_example("wait-for-signal.json"))
    signalled = (await api.start(wf["id"], {"order": 42}))["execution_id"]
    waited = (await api.start(wf["id"], {"order": 42}))["execution_id"]
    sent = await api.call(
        "POST", api.ws(f"/executions/{signalled}/signals/paid"), json={"payload": {"order": 42}}
    )
    assert sent.status == 202, sent.body
    done = await api.wait_terminal(signalled)
    assert done["status"] == "completed"
    assert done["output"] == {"shipped": 42, "by": "user"}
    assert nodes_by_id(done)["remind"]["status"] == "skipped"
    late = await api.wait_terminal(waited)
    assert late["status"] == "completed" and late["output"] == {"reminded": 42}
    assert nodes_by_id(late)["ship"]["status"] == "skipped"


async def test_approval_refuses_the_starter_and_takes_an_admins_decision(api: Api) -> None:
    wf = await api.create_workflow(load_example("approval.json"))
    approved = (await api.start(wf["id"], {"amount": 30}))["execution_id"]
    rejected = (await api.start(wf["id"], {"amount": 30}))["execution_id"]
    admin = Api(api.base, api.session)
    await admin.sign_up()
    email = (await admin.call("GET", "me")).body["user"]["email"]
    added = await api.call("POST", api.ws("/members"), json={"email": email, "role": "admin"})
    assert added.status == 201, added.body
    admin.workspace = api.workspace

    def decide(who: Api, execution_id: str, decision: str, comment: str | None = None) -> Any:
        body = {"decision": decision, "comment": comment}
        return who.call("POST", who.ws(f"/executions/{execution_id}/approvals/review"), json=body)

    own = await decide(api, approved, "approve")
    assert own.status == 403 and own.body["error"]["code"] == "self_approval_refused"
    assert (await decide(admin, approved, "approve", "ok")).status == 202
    assert (await decide(admin, rejected, "reject")).status == 202
    done = await api.wait_terminal(approved)
    assert done["status"] == "completed"
    assert done["output"] == {"refunded": 30, "comment": "ok"}
    refused = await api.wait_terminal(rejected)
    assert refused["output"] == {"refused": 30}
    assert nodes_by_id(refused)["refund"]["status"] == "skipped"


async def test_error_workflow(api: Api, target: str) -> None:
    example = load_example("error-workflow.json")
    handler = await api.create_workflow(example.pop("handler"))
    example["settings"]["error_workflow_id"] = handler["id"]
    wf = await api.create_workflow(example)
    started = await api.start(wf["id"], {"base_url": target})
    done = await api.wait_terminal(started["execution_id"])
    assert done["status"] == "failed"
    assert nodes_by_id(done)["charge"]["status"] == "failed"
    q = f"workflow_id = '{handler['id']}'"

    async def runs() -> list[dict]:
        reply = await api.call("GET", api.ws("/executions"), q=q)
        return reply.body["items"]

    [run] = await eventually(runs, timeout=30)
    run = await api.wait_terminal(run["id"])
    assert (run["trigger"], run["status"]) == ("error_workflow", "completed")
    assert run["output"] == {
        "failed_execution": started["execution_id"],
        "failed_node": "charge",
        "workflow": "Charge with an error workflow",
    }
