"""Fault tests on the stack run as one process per role: a worker stopped mid-batch, Redis
flushed mid-batch, the relay restarted. Every execution still reaches its terminal state, exactly
once in the read model, and the read model equals one rebuilt from the event log."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from api import TERMINAL, Api
from examples import load_example
from processes import Process, free_port, stack_env
from stack import eventually
from target import serve_target

from gateways.bootstrap import bootstrap
from infra.settings import Settings
from projections.visibility import READ_MODEL_TABLES

pytestmark = pytest.mark.fault

ROLES = ("gateway", "relay", "projector", "matching", "timers", "worker")
BATCH = 30


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http_port = free_port()
        self.procs: dict[str, Process] = {}
        for role in ROLES:
            port = self.http_port if role == "gateway" else free_port()
            env = stack_env(
                settings,
                LINKFLOW_HTTP_PORT=str(self.http_port),
                LINKFLOW_METRICS_PORT=str(port),
            )
            self.procs[role] = Process(role, env, f"http://127.0.0.1:{port}/health")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start_all(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def stop_all(self) -> dict[str, int]:
        return {role: p.stop() for role, p in self.procs.items() if p.proc is not None}


@pytest.fixture
def fault_settings(fresh_settings: Settings) -> Iterator[Settings]:
    yield fresh_settings.model_copy(update={"task_claim_idle_ms": 1500})


@pytest.fixture
async def running(fault_settings: Settings) -> AsyncIterator[tuple[Stack, Api, str]]:
    stack = Stack(fault_settings)
    try:
        stack.start_all()
        async with serve_target() as target, aiohttp.ClientSession() as session:
            api = Api(stack.base, session)
            await api.sign_up()
            yield stack, api, target
    finally:
        codes = stack.stop_all()
        bad = {role: code for role, code in codes.items() if code != 0}
        assert not bad, {role: stack.procs[role].output()[-3000:] for role in bad}


async def start_batch(api: Api, workflow_id: str, target: str, n: int = BATCH) -> list[str]:
    ids = []
    for i in range(n):
        # Search attributes too, so that the rebuild comparison covers their read model.
        attributes = {"order": i, "batch": "faults"}
        started = await api.start(
            workflow_id, {"base_url": target, "order_id": i}, search_attributes=attributes
        )
        ids.append(started["execution_id"])
    return ids


async def assert_all_terminal_once(api: Api, ids: list[str]) -> None:
    for execution_id in ids:
        done = await api.wait_terminal(execution_id, timeout=60)
        assert done["status"] == "completed", done
        assert done["output"]["order"] == done["input"]["order_id"]
    listed: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await api.call("GET", api.ws("/executions"), limit=200, cursor=cursor)
        listed += page.body["items"]
        cursor = page.body["next_cursor"]
        if not cursor:
            break
    seen = [item["id"] for item in listed]
    assert sorted(seen) == sorted(set(seen)), "an execution appears twice in the read model"
    assert set(ids) <= set(seen)
    assert all(item["status"] in TERMINAL for item in listed if item["id"] in ids)


async def snapshot(settings: Settings) -> dict[str, list[Any]]:
    container = await bootstrap(settings)
    try:
        async with container.pool.connection() as conn:
            out = {}
            for table in READ_MODEL_TABLES:
                cur = await conn.execute(f"SELECT * FROM {table}")
                # Every row, in an order that does not depend on the table's key.
                out[table] = sorted(await cur.fetchall(), key=repr)
            return out
    finally:
        await container.close()


async def finish_and_compare(stack: Stack, api: Api, ids: list[str]) -> None:
    await assert_all_terminal_once(api, ids)
    codes = stack.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    before = await snapshot(stack.settings)
    rebuild = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateways.cli", "rebuild-read-models", env=stack_env(stack.settings)
    )
    assert await rebuild.wait() == 0
    after = await snapshot(stack.settings)
    assert before["rm_execution_attributes"], "the comparison covers search attributes"
    assert before == after


async def test_worker_stopped_mid_batch_and_started_again(running: Any) -> None:
    stack, api, target = running
    wf = await api.create_workflow(load_example("order-followup.json"))
    ids = await start_batch(api, wf["id"], target)
    stack.procs["worker"].stop(signal.SIGKILL)  # dies without acknowledging what it holds
    ids += await start_batch(api, wf["id"], target, 10)
    stack.procs["worker"].start()
    await finish_and_compare(stack, api, ids)


async def test_redis_flushed_mid_batch(running: Any) -> None:
    stack, api, target = running
    wf = await api.create_workflow(load_example("order-followup.json"))
    ids = await start_batch(api, wf["id"], target)
    client = aioredis.Redis.from_url(stack.settings.redis_url)
    await client.flushall()
    await client.aclose()
    ids += await start_batch(api, wf["id"], target, 10)
    await finish_and_compare(stack, api, ids)


async def test_relay_restarted_mid_batch(running: Any) -> None:
    stack, api, target = running
    wf = await api.create_workflow(load_example("order-followup.json"))
    ids = await start_batch(api, wf["id"], target)
    stack.procs["relay"].stop(signal.SIGKILL)
    ids += await start_batch(api, wf["id"], target, 10)
    stack.procs["relay"].start()
    await finish_and_compare(stack, api, ids)


async def test_sigterm_lets_the_worker_finish_what_it_runs(running: Any) -> None:
    stack, api, target = running
    slow = {
        "name": "slow call",
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "timeout_s": 30,
                "config": {"url": "{{ trigger.base_url }}/slow"},
            }
        ],
    }
    wf = await api.create_workflow(slow)
    ids = [(await api.start(wf["id"], {"base_url": target}))["execution_id"] for _ in range(3)]
    client = aioredis.Redis.from_url(stack.settings.redis_url)
    tasks = f"{stack.settings.redis_prefix}tasks:default"

    async def all_taken() -> bool:
        try:
            return (await client.xpending(tasks, "workers"))["pending"] == len(ids)
        except aioredis.ResponseError:
            return False

    try:
        await eventually(all_taken, timeout=10)
        # The calls take 5 s; the worker must finish them before it exits.
        # (In a thread: the target serving those calls runs on this event loop.)
        assert await asyncio.to_thread(stack.procs["worker"].stop, signal.SIGTERM) == 0
        assert (await client.xpending(tasks, "workers"))["pending"] == 0
    finally:
        await client.aclose()
    for execution_id in ids:
        done = await api.wait_terminal(execution_id)
        assert done["status"] == "completed", done


async def test_a_worker_killed_mid_call_runs_each_node_at_most_twice(running: Any) -> None:
    """Issue 12, defect 1: after a worker's kill -9, a node ran three times (its timeout, counted
    from the scheduling, retried it while the killed attempt's entry was also reclaimed and run
    again). Now a node whose worker died runs again once, on the reclaimed entry."""
    stack, api, target = running
    calls = {
        "name": "counted call",
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "timeout_s": 3,
                "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                "config": {"url": "{{ trigger.base_url }}/count/{{ execution.id }}?delay_ms=800"},
            }
        ],
    }
    wf = await api.create_workflow(calls)
    ids = [(await api.start(wf["id"], {"base_url": target}))["execution_id"] for _ in range(5)]

    async def counts() -> dict[str, int]:
        async with aiohttp.ClientSession() as session, session.get(f"{target}/counts") as resp:
            return dict(await resp.json())

    async def all_in_flight() -> bool:
        return set(ids) <= set(await counts())

    await eventually(all_in_flight, timeout=10)
    stack.procs["worker"].stop(signal.SIGKILL)  # mid-call: none of them answered
    await asyncio.sleep(4)  # the scenario: the worker stays dead past the node's timeout
    stack.procs["worker"].start()
    for execution_id in ids:
        done = await api.wait_terminal(execution_id, timeout=60)
        assert done["status"] == "completed", done
    seen = await counts()
    assert all(seen[execution_id] <= 2 for execution_id in ids), seen
