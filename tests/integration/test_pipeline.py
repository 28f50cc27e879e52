"""Relay, projector, matching, timers and worker on the real PostgreSQL and Redis, in-process."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import UUID, uuid4

import pytest
from examples import load_example
from redis.exceptions import ResponseError
from stack import eventually, execution_row, roles
from target import serve_target

from commands import models as m
from gateways.bootstrap import Container
from gateways.roles import run_relay
from infra.eventlog import head_position, unpack
from infra.settings import Settings
from infra.streams import WORKER_GROUP, events_stream, task_stream


def setup_workflow(c: Container, example: str | dict[str, Any]) -> tuple[UUID, UUID]:
    definition = load_example(example) if isinstance(example, str) else example
    reg = c.bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    user, ws = UUID(reg.fields["user"]["id"]), UUID(reg.fields["workspace"]["id"])
    wf = c.bus.handle(m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=definition))
    return ws, UUID(wf.fields["id"])


async def start(c: Container, ws: UUID, wf: UUID, input: Any) -> UUID:
    result = await c.bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf, input=input))
    return result.execution_id


async def closed(c: Container, execution_id: UUID) -> dict[str, Any] | None:
    row = await execution_row(c, execution_id)
    return row if row and row["status"] != "running" else None


async def test_relay_publishes_in_order_and_resumes_where_it_stopped(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, "fan-out-join.json")
        await start(c, ws, wf, {})
        r.start("relay")
        stream = events_stream(fresh_settings)
        async with c.pool.connection() as conn:
            head = await head_position(conn)
        entries = await eventually(lambda: _entries_upto(c, stream, head), timeout=10)
        positions = [e.position for _, f in entries for e in unpack(f)]
        assert positions == sorted(positions) and positions[-1] == head
        await r.stop("relay")
        await start(c, ws, wf, {})
        r.start("relay")
        async with c.pool.connection() as conn:
            new_head = await head_position(conn)
        entries = await eventually(lambda: _entries_upto(c, stream, new_head), timeout=10)
        positions = [e.position for _, f in entries for e in unpack(f)]
        assert len(positions) == len(set(positions)), "the relay republished what it had sent"


async def _entries_upto(c: Container, stream: str, head: int) -> list[Any] | None:
    entries = await c.redis.xrange(stream)
    if entries and int(entries[-1][1][b"last"]) >= head:
        return entries
    return None


async def test_executions_run_to_completion_through_every_consumer(settings: Settings) -> None:
    async with (
        serve_target() as base,
        roles(settings, "relay", "projector", "matching", "timers", "worker") as r,
    ):
        c = r.container
        ws, wf = setup_workflow(c, "order-followup.json")
        paid = await start(c, ws, wf, {"base_url": base, "order_id": 42})
        unpaid = await start(c, ws, wf, {"base_url": base, "order_id": 7})
        row = await eventually(lambda: closed(c, paid))
        assert row["status"] == "completed"
        assert row["output"] == {"order": 42, "total": 420}
        row = await eventually(lambda: closed(c, unpaid))
        assert row["output"] == {"reason": "unpaid", "order": 7}


async def test_projector_catches_up_from_the_event_store_when_redis_never_had_the_events(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, "timeout.json")
        execution = await start(c, ws, wf, {})
        # No relay runs: nothing reaches Redis. The projector must still see the execution.
        r.start("projector")
        row = await eventually(lambda: execution_row(c, execution), timeout=10)
        assert row["status"] == "running"


async def test_timer_survives_a_restart_and_fires_once(fresh_settings: Settings) -> None:
    definition = {
        "name": "wait",
        "nodes": [
            {"id": "pause", "type": "delay", "config": {"seconds": 1.0}},
            {"id": "after", "type": "transform", "config": {"set": {"done": True}}},
        ],
        "edges": [{"source": "pause", "target": "after"}],
    }
    async with roles(fresh_settings, "relay", "projector", "timers") as r:
        c = r.container
        reg = c.bus.handle(
            m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="pw-12345678", name="T")
        )
        ws = UUID(reg.fields["workspace"]["id"])
        wf = c.bus.handle(
            m.CreateWorkflow(
                workspace_id=ws, actor_id=UUID(reg.fields["user"]["id"]), definition=definition
            )
        )
        execution = await start(c, ws, UUID(wf.fields["id"]), {})

        async def timer_stored() -> bool:
            async with c.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM engine_timers WHERE execution_id = %s",
                    (execution,),
                )
                return (await cur.fetchone())["n"] == 1

        await eventually(timer_stored, timeout=10)
        await r.stop("timers")  # down while the timer comes due
        r.start("timers")
        row = await eventually(lambda: closed(c, execution))
        assert row["status"] == "completed" and row["output"] == {"done": True}
        from infra.eventstore import EVENTS_TABLE

        async with c.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) AS n FROM {EVENTS_TABLE} WHERE originator_id = %s"
                " AND topic LIKE %s",
                (execution, "%TimerFired"),
            )
            assert (await cur.fetchone())["n"] == 1


async def test_a_dead_workers_pending_task_is_reclaimed(fresh_settings: Settings) -> None:
    async with (
        serve_target() as base,
        roles(fresh_settings, "relay", "projector", "matching", "timers") as r,
    ):
        c = r.container
        ws, wf = setup_workflow(c, "fan-out-join.json")
        execution = await start(c, ws, wf, {"base_url": base})
        stream = task_stream(fresh_settings, "default")

        async def taken_by_dead_worker() -> list[Any] | None:
            try:
                got = await c.redis.xreadgroup(
                    WORKER_GROUP, "dead-worker", {stream: ">"}, count=10, block=100
                )
            except ResponseError:  # matching has not created the queue yet
                return None
            return got[0][1] if got else None

        taken = await eventually(taken_by_dead_worker, timeout=10)
        assert {json.loads(f[b"task"])["node_id"] for _, f in taken} <= {"a", "b"}
        # The dead worker never acknowledges. A live worker must reclaim after the idle time.
        r.start("worker")
        row = await eventually(lambda: closed(c, execution), timeout=20)
        assert row["status"] == "completed" and row["output"] == {"total": 9}


@pytest.mark.fault
async def test_flushing_redis_mid_batch_loses_nothing(fresh_settings: Settings) -> None:
    async with (
        serve_target() as base,
        roles(fresh_settings, "relay", "projector", "matching", "timers", "worker") as r,
    ):
        c = r.container
        ws, wf = setup_workflow(c, "order-followup.json")
        ids = [await start(c, ws, wf, {"base_url": base, "order_id": i}) for i in range(20)]
        await c.redis.flushall()
        ids += [await start(c, ws, wf, {"base_url": base, "order_id": i}) for i in range(20, 40)]
        for execution in ids:
            row = await eventually(lambda e=execution: closed(c, e), timeout=30)
            assert row["status"] == "completed"


async def test_malformed_stream_entries_are_dropped_and_work_goes_on(
    fresh_settings: Settings,
) -> None:
    async with (
        serve_target() as base,
        roles(fresh_settings, "relay", "projector", "matching", "timers", "worker") as r,
    ):
        c = r.container
        ws, wf = setup_workflow(c, "fan-out-join.json")
        first = await start(c, ws, wf, {"base_url": base})
        await eventually(lambda: closed(c, first))
        events, tasks = events_stream(fresh_settings), task_stream(fresh_settings, "default")
        await c.redis.xadd(events, {"pos": "not-a-number"})
        await c.redis.xadd(events, {"garbage": b"\xff"})
        await c.redis.xadd(tasks, {"task": "{not json"})
        await c.redis.xadd(tasks, {"task": json.dumps({"task_id": "x"})})
        second = await start(c, ws, wf, {"base_url": base})
        row = await eventually(lambda: closed(c, second))
        assert row["output"] == {"total": 9}

        async def nothing_pending() -> bool:
            for stream, group in ((events, "projector"), (tasks, WORKER_GROUP)):
                pending = await c.redis.xpending(stream, group)
                if pending["pending"]:
                    return False
            return True

        await eventually(nothing_pending, timeout=10)


async def test_a_standby_relay_takes_over_when_the_active_one_stops(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, "timeout.json")
        stops = [asyncio.Event(), asyncio.Event()]
        first = asyncio.create_task(run_relay(c, stops[0]))
        await start(c, ws, wf, {})
        async with c.pool.connection() as conn:
            head = await head_position(conn)
        stream = events_stream(fresh_settings)
        await eventually(lambda: _entries_upto(c, stream, head), timeout=10)
        second = asyncio.create_task(run_relay(c, stops[1]))  # waits: the lock is held
        stops[0].set()
        await asyncio.wait_for(first, timeout=10)
        await start(c, ws, wf, {})
        async with c.pool.connection() as conn:
            new_head = await head_position(conn)
        entries = await eventually(lambda: _entries_upto(c, stream, new_head), timeout=10)
        positions = [e.position for _, f in entries for e in unpack(f)]
        assert positions == sorted(set(positions))
        stops[1].set()
        await asyncio.wait_for(second, timeout=10)


async def test_a_task_whose_stream_entry_redis_lost_is_published_again(
    fresh_settings: Settings,
) -> None:
    settings = fresh_settings.model_copy(update={"lost_task_after_s": 0.6})
    async with serve_target() as base, roles(settings, "relay", "projector", "matching") as r:
        c = r.container
        one_call = {
            "name": "one call",
            "nodes": [
                {"id": "call", "type": "http_request", "config": {"url": f"{base}/price/ab"}}
            ],
        }
        ws, wf = setup_workflow(c, one_call)
        execution = await start(c, ws, wf, {})
        stream = task_stream(settings, "default")

        async def entries() -> list[Any] | None:
            return await c.redis.xrange(stream) or None

        [(entry_id, _)] = await eventually(entries, timeout=10)
        await c.redis.xdel(stream, entry_id)  # Redis loses the entry; no flush, epoch intact
        [(again, fields)] = await eventually(entries, timeout=10)
        assert again != entry_id
        assert json.loads(fields[b"task"])["republished"] is True
        r.start("worker")
        row = await eventually(lambda: closed(c, execution), timeout=20)
        assert row["status"] == "completed" and row["output"]["body"] == {"sku": "ab", "price": 2}


async def test_cancel_tells_the_worker_to_stop_a_running_attempt(fresh_settings: Settings) -> None:
    async with (
        serve_target() as base,
        roles(fresh_settings, "relay", "projector", "matching", "timers", "worker") as r,
    ):
        c = r.container
        slow = {
            "name": "slow",
            "nodes": [{"id": "call", "type": "http_request", "config": {"url": f"{base}/slow"}}],
        }
        ws, wf = setup_workflow(c, slow)
        execution = await start(c, ws, wf, {})
        tasks = task_stream(fresh_settings, "default")

        async def pending() -> int:
            try:
                return int((await c.redis.xpending(tasks, WORKER_GROUP))["pending"])
            except ResponseError:
                return 0

        await eventually(lambda: pending(), timeout=10)  # the worker holds the attempt
        canceled_at = time.monotonic()
        await c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=execution))

        async def released() -> bool:
            return await pending() == 0

        await eventually(released, timeout=10)
        # /slow answers after 5 s: the worker let go of the attempt well before that.
        assert time.monotonic() - canceled_at < 3
        row = await eventually(lambda: closed(c, execution))
        assert row["status"] == "canceled"
