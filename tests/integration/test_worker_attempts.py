"""The worker runs only attempts that still matter, times them from their start, and ends work
that keeps failing (issue 12, defects 1, 4 and 6), on the real PostgreSQL and Redis with a real
HTTP target that counts the calls it receives."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import aiohttp
from stack import eventually, roles
from target import serve_target
from test_pipeline import setup_workflow, start

from commands import models as m
from gateways.bootstrap import Container
from infra.settings import Settings
from infra.streams import WORKER_GROUP, task_stream


def one_call(path: str, **node: Any) -> dict[str, Any]:
    return {
        "name": "one call",
        "nodes": [
            {"id": "call", "type": "http_request", "config": {"url": "{{ trigger.base }}" + path}}
            | node
        ],
    }


async def calls(base: str, key: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/counts") as resp:
        return int((await resp.json()).get(key, 0))


async def history(c: Container, execution_id: UUID) -> list[Any]:
    return list(c.store.events.get(execution_id))


def types(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


async def closed_events(c: Container, execution_id: UUID) -> list[Any] | None:
    events = await history(c, execution_id)
    return events if any(type(e).__name__.startswith("Execution") for e in events[1:]) else None


async def stream_empty(c: Container, settings: Settings) -> bool:
    return await c.redis.xlen(task_stream(settings, "default")) == 0


async def test_a_task_whose_execution_ended_while_it_waited_makes_no_call(
    fresh_settings: Settings,
) -> None:
    """Before, only republished tasks were checked: a canceled execution's queued task still
    called its target when a worker reached it (55,700 such calls in the issue's run)."""
    async with serve_target() as base, roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/count/canceled"))
        execution = await start(c, ws, wf, {"base": base})
        assert await c.redis.xlen(task_stream(fresh_settings, "default")) == 1  # queued
        await c.bus.execute(m.CancelExecution(workspace_id=ws, execution_id=execution))
        r.start("worker")
        await eventually(lambda: stream_empty(c, fresh_settings), timeout=10)
        assert await calls(base, "canceled") == 0


async def test_time_waiting_in_the_queue_does_not_count_against_the_node_timeout(
    fresh_settings: Settings,
) -> None:
    """Before, `timeout_s` ran from the scheduling: a task that waited longer than it in a busy
    queue (here: no worker yet) timed out and was retried or failed without ever running."""
    async with serve_target() as base, roles(fresh_settings, "relay", "timers") as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/count/waited", timeout_s=0.5))
        execution = await start(c, ws, wf, {"base": base})
        await asyncio.sleep(1.5)  # the scenario: three times the node's timeout in the queue
        r.start("worker")
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        assert "ExecutionCompleted" in types(events), types(events)
        assert "NodeTimedOut" not in types(events)
        assert await calls(base, "waited") == 1


async def test_a_running_attempt_times_out_after_timeout_s_from_its_start(
    fresh_settings: Settings,
) -> None:
    async with serve_target() as base, roles(fresh_settings, "worker") as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/slow", timeout_s=0.5))
        execution = await start(c, ws, wf, {"base": base})
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        [timed_out] = [e for e in events if type(e).__name__ == "NodeTimedOut"]
        assert timed_out.timeout == "start_to_close"
        assert types(events)[-1] == "ExecutionFailed"


async def test_schedule_to_start_records_the_start_and_refuses_a_late_worker(
    fresh_settings: Settings,
) -> None:
    async with serve_target() as base, roles(fresh_settings, "relay", "timers") as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/count/late", schedule_to_start_s=0.5))
        late = await start(c, ws, wf, {"base": base})
        # No worker within 0.5 s: the attempt times out, and the worker that comes later
        # does not run it.
        events = await eventually(lambda: closed_events(c, late), timeout=15)
        assert types(events)[-2:] == ["NodeTimedOut", "ExecutionFailed"]
        r.start("worker")
        await eventually(lambda: stream_empty(c, fresh_settings), timeout=10)
        assert await calls(base, "late") == 0
        # With a worker waiting, the start is recorded, then the result.
        on_time = await start(c, ws, wf, {"base": base})
        events = await eventually(lambda: closed_events(c, on_time), timeout=15)
        assert types(events)[1:] == [
            "NodeScheduled",
            "TimerScheduled",
            "NodeStarted",
            "NodeCompleted",
            "ExecutionCompleted",
        ]
        assert await calls(base, "late") == 1


async def test_an_entry_delivered_again_and_again_fails_its_node_instead_of_running(
    fresh_settings: Settings,
) -> None:
    """A task whose handling kills its worker (here: claimed by consumers that never answer)
    was delivered every claim interval for ever, calling the target each time. Past
    LINKFLOW_TASK_MAX_DELIVERIES the node fails with `worker_error`."""
    async with serve_target() as base, roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/count/poison"))
        execution = await start(c, ws, wf, {"base": base})
        stream = task_stream(fresh_settings, "default")
        [[_, [(entry_id, _)]]] = await c.redis.xreadgroup(
            WORKER_GROUP, "dead-1", {stream: ">"}, count=1
        )
        for n in range(fresh_settings.task_max_deliveries):  # more dead workers took it
            await c.redis.xclaim(stream, WORKER_GROUP, f"dead-{n + 2}", 0, [entry_id])
        r.start("worker")
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        [failed] = [e for e in events if type(e).__name__ == "NodeFailed"]
        assert failed.error["type"] == "worker_error"
        assert "delivered" in failed.error["message"]
        assert await calls(base, "poison") == 0
        await eventually(lambda: stream_empty(c, fresh_settings), timeout=10)


async def test_a_response_the_worker_cannot_handle_fails_the_node_once(
    fresh_settings: Settings,
) -> None:
    """A target answering 990 nested arrays raised RecursionError in the worker, which left the
    entry pending: delivered again every 30 s for ever, calling the target each time."""
    async with serve_target() as base, roles(fresh_settings, "worker") as r:
        c = r.container
        ws, wf = setup_workflow(c, one_call("/nested/990"))
        execution = await start(c, ws, wf, {"base": base})
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        [failed] = [e for e in events if type(e).__name__ == "NodeFailed"]
        assert failed.error["type"] == "response_too_deep"
        assert types(events)[-1] == "ExecutionFailed"
        await eventually(lambda: stream_empty(c, fresh_settings), timeout=10)
        assert await calls(base, "nested") == 1


async def test_an_output_past_the_limit_fails_the_node_without_a_retry(
    fresh_settings: Settings,
) -> None:
    settings = fresh_settings.model_copy(update={"max_output_bytes": 2_000})
    async with serve_target() as base, roles(settings, "worker") as r:
        c = r.container
        retried = {"retry": {"max_attempts": 3, "initial_interval_s": 0.1}}
        ws, wf = setup_workflow(c, one_call("/big/5000", **retried))
        execution = await start(c, ws, wf, {"base": base})
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        [failed] = [e for e in events if type(e).__name__ == "NodeFailed"]
        assert failed.error == {
            "type": "output_too_large",
            "message": "the node's output exceeds 2000 bytes",
        }
        assert await calls(base, "big") == 1  # not retried
        ws, wf = setup_workflow(c, one_call("/big/1000"))
        execution = await start(c, ws, wf, {"base": base})
        events = await eventually(lambda: closed_events(c, execution), timeout=15)
        assert types(events)[-1] == "ExecutionCompleted"
