"""Concurrency limits on the real PostgreSQL and Redis: a queued execution visible in the list and
a count, admitted when the slot holder completes; per-key gates; cancel of a waiter and of a
holder; racing starts and racing closings decided exactly once; a key that does not render."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import aiohttp
from api import Api
from stack import eventually, roles
from target import serve_target

from commands import models as m
from commands.reruns import RerunExecution, RerunExecutions
from domain.base import DomainError
from domain.concurrency import ConcurrencyGate, gate_id
from domain.execution import Execution
from gateways.bootstrap import Container
from infra.settings import Settings
from projections.queries import open_executions


def gated(base: str, limit: int, key: str | None = None) -> dict[str, Any]:
    concurrency: dict[str, Any] = {"limit": limit}
    if key:
        concurrency["key"] = key
    return {
        "name": "gated",
        "trigger": {"type": "manual"},
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "config": {"method": "GET", "url": base + "/count/{{ trigger.name }}"},
            }
        ],
        "edges": [],
        "settings": {"concurrency": concurrency},
    }


async def test_limit_one_queues_the_second_until_the_first_completes(
    api: Api, fresh_settings: Settings
) -> None:
    async with (
        serve_target() as base,
        roles(fresh_settings, "relay", "projector", "matching", "timers") as r,
    ):
        workflow = await api.create_workflow(gated(base, 1))
        first = await api.start(workflow["id"], {"name": "first"})
        second = await api.start(workflow["id"], {"name": "second"})
        assert (first["status"], second["status"]) == ("running", "queued")

        async def listed() -> Any:
            reply = await api.call("GET", api.ws("/executions"), status="queued")
            return reply.body["items"] if reply.body["items"] else None

        [item] = await eventually(listed)
        assert item["id"] == second["execution_id"]
        count = await api.call(
            "GET",
            api.ws("/executions/count"),
            q="status = 'queued'",
            min_position=second["position"],
        )
        assert count.status == 200, count.body
        assert count.body["count"] == 1
        got = await api.call("GET", api.ws(f"/executions/{second['execution_id']}"))
        assert got.body["status"] == "queued"

        r.start("worker")  # the first runs; its completion admits the second
        done = await api.wait_terminal(second["execution_id"])
        assert done["status"] == "completed"
        assert (await api.wait_terminal(first["execution_id"]))["status"] == "completed"
        calls = await api.session.get(base + "/calls")
        assert await calls.json() == ["first", "second"]
        history = await api.call("GET", api.ws(f"/executions/{second['execution_id']}/history"))
        types = [e["type"] for e in history.body]
        assert types[:3] == ["ExecutionStarted", "ExecutionQueued", "ExecutionAdmitted"]


def setup(c: Container, definition: dict[str, Any]) -> tuple[UUID, UUID]:
    reg = c.bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    user, ws = UUID(reg.fields["user"]["id"]), UUID(reg.fields["workspace"]["id"])
    wf = c.bus.handle(m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=definition))
    return ws, UUID(wf.fields["id"])


async def start(c: Container, ws: UUID, wf: UUID, name: str) -> Any:
    return await c.bus.execute(
        m.StartExecution(workspace_id=ws, workflow_id=wf, input={"name": name, "c": "acme"})
    )


def status(c: Container, execution_id: UUID) -> str:
    return str(c.store.read_fresh(Execution, execution_id).status)


def gate(c: Container, wf: UUID, key: str = "") -> ConcurrencyGate:
    return c.store.read_fresh(ConcurrencyGate, gate_id(str(wf), key))


async def test_gates_per_key_and_cancel_of_a_waiter_and_of_a_holder(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 1, key="{{ trigger.name }}"))
        a1, b1 = await start(c, ws, wf, "a"), await start(c, ws, wf, "b")
        assert (a1.status, b1.status) == ("running", "running")  # other keys, other gates
        a2, a3 = await start(c, ws, wf, "a"), await start(c, ws, wf, "a")
        assert (a2.status, a3.status) == ("queued", "queued")
        # A canceled waiter leaves the line.
        await c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=a2.execution_id))
        assert status(c, a2.execution_id) == "canceled"
        assert gate(c, wf, "a").waiting == [str(a3.execution_id)]
        # A canceled holder frees its slot: the next in line runs, in the same transaction.
        await c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=a1.execution_id))
        assert status(c, a3.execution_id) == "running"
        assert gate(c, wf, "a").holders == [str(a3.execution_id)]
        assert gate(c, wf, "b").holders == [str(b1.execution_id)]
        # A repeated cancel changes nothing.
        await c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=a1.execution_id))
        assert gate(c, wf, "a").holders == [str(a3.execution_id)]


async def test_racing_starts_take_the_one_slot_once(fresh_settings: Settings) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 1))
        answers = await asyncio.gather(*(start(c, ws, wf, f"n{i}") for i in range(8)))
        running = [a.execution_id for a in answers if a.status == "running"]
        assert len(running) == 1, [a.status for a in answers]
        g = gate(c, wf)
        assert g.holders == [str(running[0])] and len(g.waiting) == 7


async def test_racing_closings_admit_each_waiter_once(fresh_settings: Settings) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 2))
        answers = [await start(c, ws, wf, f"n{i}") for i in range(5)]
        assert [a.status for a in answers] == ["running"] * 2 + ["queued"] * 3
        holders = [a.execution_id for a in answers[:2]]
        # Both holders close at once, each cancel sent twice (a repeat): two admissions.
        await asyncio.gather(
            *(
                c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=h))
                for h in holders * 2
            )
        )
        admitted = [a.execution_id for a in answers[2:4]]
        assert [status(c, e) for e in admitted] == ["running", "running"]
        assert status(c, answers[4].execution_id) == "queued"
        for execution_id in admitted:
            stored = c.store.events.get(execution_id)
            assert sum(isinstance(e, Execution.ExecutionAdmitted) for e in stored) == 1
        g = gate(c, wf)
        assert sorted(g.holders) == sorted(map(str, admitted))
        assert g.waiting == [str(answers[4].execution_id)]


async def test_a_key_that_does_not_render_fails_the_execution_at_start(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 1, key="{{ trigger.missing }}"))
        answer = await start(c, ws, wf, "x")
        assert answer.status == "failed"
        execution = c.store.read_fresh(Execution, answer.execution_id)
        assert execution.error is not None
        assert execution.error["type"] == "concurrency_key_error"
        assert "rendered to nothing" in execution.error["message"]


async def test_priority_one_runs_before_priority_five_queued_earlier(
    fresh_settings: Settings,
) -> None:
    """With the worker stopped the queue's stream takes one task (backlog 1): the rest wait in
    matching, which hands them out by priority once the worker reads."""
    settings = fresh_settings.model_copy(update={"dispatch_backlog": 1, "worker_concurrency": 1})
    async with (
        serve_target() as base,
        roles(settings, "relay", "projector", "matching", "timers") as r,
    ):
        c = r.container
        definition = gated(base, 1)
        del definition["settings"]["concurrency"]
        ws, wf = setup(c, definition)
        started = []
        for name, priority in (("filler", None), ("low", 5), ("high", 1)):
            command = m.StartExecution(
                workspace_id=ws, workflow_id=wf, input={"name": name}, priority=priority
            )
            started.append((await c.bus.execute(command)).execution_id)

        async def held() -> Any:
            async with c.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE entry_id IS NULL) AS held FROM engine_tasks"
                )
                row = await cur.fetchone()
                await conn.commit()
            return row is not None and row["held"] == 2

        await eventually(held)  # low, then high, wait in matching
        r.start("worker")

        async def all_completed() -> bool:
            return all(status(c, e) == "completed" for e in started)

        await eventually(all_completed)
        assert await target_calls(base) == ["filler", "high", "low"]


async def target_calls(base: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(base + "/calls") as reply:
        return await reply.json()


async def test_priority_outside_1_to_5_is_refused(api: Api) -> None:
    workflow = await api.create_workflow(gated("http://127.0.0.1:9", 1))
    for priority in (0, 6, "high"):
        reply = await api.call(
            "POST",
            api.ws(f"/workflows/{workflow['id']}/executions"),
            json={"input": {}, "priority": priority},
        )
        assert reply.status == 422, reply.body
        assert reply.body["error"]["details"][0]["path"] == "priority"
    bad = dict(
        gated("http://127.0.0.1:9", 1), settings={"concurrency": {"limit": 0}, "priority": 9}
    )
    reply = await api.call("POST", api.ws("/workflows"), json=bad)
    assert reply.status == 422, reply.body
    paths = {d["path"] for d in reply.body["error"]["details"]}
    assert {"settings.concurrency.limit", "settings.priority"} <= paths


async def test_a_timed_out_holder_frees_its_slot(fresh_settings: Settings) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        definition = gated("http://127.0.0.1:9", 1)
        definition["settings"]["timeout_s"] = 60
        ws, wf = setup(c, definition)
        holder, waiter = await start(c, ws, wf, "a"), await start(c, ws, wf, "b")
        assert waiter.status == "queued"
        timers = c.store.read_fresh(Execution, holder.execution_id).timers
        [timeout] = [t for t, spec in timers.items() if spec["kind"] == "execution_timeout"]
        await c.bus.execute(m.FireTimer(execution_id=holder.execution_id, timer_id=timeout))
        assert status(c, holder.execution_id) == "timed_out"
        assert status(c, waiter.execution_id) == "running"
        assert gate(c, wf).holders == [str(waiter.execution_id)]


async def test_a_workflow_without_a_limit_saves_nothing_but_its_execution(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        definition = gated("http://127.0.0.1:9", 1)
        del definition["settings"]["concurrency"]
        ws, wf = setup(c, definition)
        started = await start(c, ws, wf, "a")
        canceled = await c.bus.execute(
            m.CancelExecution(workspace_id=ws, execution_id=started.execution_id)
        )
        for result in (started, canceled):
            assert result.saved
            assert {e.originator_id for e in result.saved} == {started.execution_id}


async def test_cancel_of_a_queued_execution_over_http(api: Api) -> None:
    workflow = await api.create_workflow(gated("http://127.0.0.1:9", 1))
    await api.start(workflow["id"], {"name": "a"})
    queued = await api.start(workflow["id"], {"name": "b"})
    assert queued["status"] == "queued"
    reply = await api.call("POST", api.ws(f"/executions/{queued['execution_id']}/cancel"), json={})
    assert reply.status in (200, 202), reply.body
    assert reply.body["status"] == "canceled"


async def test_queued_executions_count_as_open_for_back_pressure(fresh_settings: Settings) -> None:
    async with roles(fresh_settings, "relay", "projector") as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 1))
        answers = [await start(c, ws, wf, f"n{i}") for i in range(3)]
        assert [a.status for a in answers] == ["running", "queued", "queued"]

        async def counted() -> bool:
            async with c.pool.connection() as conn:
                open_, position = await open_executions(conn, ws)
            return position >= answers[-1].position and open_ == 3

        await eventually(counted)


async def test_re_runs_enter_the_gate_and_a_queued_original_is_not_re_run(
    fresh_settings: Settings,
) -> None:
    """A re-run of a gated workflow takes a slot or waits like a start; a bulk re-run enters
    one gate instance for all its executions (saved once, no conflict with itself); an
    original still queued is not closed: 409."""
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup(c, gated("http://127.0.0.1:9", 1))
        closed = []
        for name in ("x", "y"):
            started = await start(c, ws, wf, name)
            await c.bus.execute(
                m.CancelExecution(workspace_id=ws, execution_id=started.execution_id)
            )
            closed.append(started.execution_id)
        holder = await start(c, ws, wf, "holder")
        assert status(c, holder.execution_id) == "running"
        one = await c.bus.execute(RerunExecution(workspace_id=ws, execution_id=closed[0]))
        assert status(c, one.execution_id) == "queued"
        bulk = await c.bus.execute(
            RerunExecutions(workspace_id=ws, q="status = 'canceled'", execution_ids=closed)
        )
        reruns = [UUID(i) for i in bulk.fields["execution_ids"]]
        assert [status(c, i) for i in reruns] == ["queued", "queued"]
        assert gate(c, wf).holders == [str(holder.execution_id)]
        assert gate(c, wf).waiting == [str(i) for i in (one.execution_id, *reruns)]
        try:
            await c.bus.execute(RerunExecution(workspace_id=ws, execution_id=one.execution_id))
        except DomainError as exc:
            assert exc.code == "execution_running"
        else:
            raise AssertionError("a queued execution was re-run")
