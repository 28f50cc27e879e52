"""Task dispatch on the real PostgreSQL and Redis (`engine.dispatch`): the command's own process
sends a scheduled task at once, without the relay or matching; matching then records it without
sending it again; whichever of the two comes first, the stream holds the task once."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID, uuid4

from stack import eventually, roles
from test_matching import ONE_CALL, task_rows
from test_pipeline import setup_workflow

from commands import models as m
from engine.dispatch import Dispatcher, tasks_of
from engine.tasks import TaskMessage
from gateways.bootstrap import Container
from infra.settings import Settings
from infra.streams import task_stream


async def entries_for(c: Container, execution: UUID) -> list[tuple[bytes, dict[str, Any]]]:
    entries = await c.redis.xrange(task_stream(c.settings, "default"))
    found = [(eid, json.loads(f[b"task"])) for eid, f in entries]
    return [(eid, t) for eid, t in found if t["execution_id"] == str(execution)]


async def test_a_started_execution_reaches_the_task_stream_without_relay_or_matching(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:  # no role runs: no relay, no matching
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL)
        result = await c.bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf, input={}))
        execution = result.execution_id
        [(entry_id, task)] = await entries_for(c, execution)  # there at once, not eventually
        assert (task["node_id"], task["attempt"]) == ("call", 1)

        r.start("relay")
        r.start("matching")
        [row] = await eventually(lambda: task_rows(c, execution), timeout=10)
        assert row["task_id"] == f"{execution}:call:1"
        async with c.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT entry_id FROM engine_tasks WHERE task_id = %s", (row["task_id"],)
            )
            recorded = (await cur.fetchone())["entry_id"]
            await conn.commit()
        assert recorded == entry_id.decode()
        assert len(await entries_for(c, execution)) == 1  # matching did not send it again


async def test_when_matching_sends_first_the_fast_path_does_not_send_again(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings, "relay", "matching") as r:
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL)
        # bus.handle is the synchronous path: no fast dispatch, so matching sends the task.
        result = c.bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf, input={}))
        execution = result.execution_id
        # Matching records the task held, then its feed loop sends it.
        await eventually(lambda: entries_for(c, execution), timeout=10)
        assert len(await entries_for(c, execution)) == 1
        assert c.bus.after_save is not None
        await c.bus.after_save(result.saved)  # the fast path, late
        assert len(await entries_for(c, execution)) == 1


async def test_the_fast_path_still_sends_after_redis_lost_its_scripts(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL)
        await c.bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf, input={}))
        # As after a Redis restart: the claim script is no longer cached (EVALSHA would fail).
        await c.redis.script_flush()
        result = await c.bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf, input={}))
        execution = result.execution_id
        [(_, task)] = await entries_for(c, execution)
        assert task["node_id"] == "call"


async def test_the_feed_measures_room_after_redis_lost_the_stream(fresh_settings: Settings) -> None:
    """Chaos run (issue 12 shapes, this session): after a Redis restart matching's feed asked
    XPENDING of a stream whose workers' group was gone and logged `feed_failed` (NOGROUP) with
    a traceback. Now the group is created again and the room measured."""
    settings = fresh_settings.model_copy(update={"dispatch_backlog": 4})
    async with roles(settings) as r:
        c = r.container
        dispatcher = Dispatcher(c.redis, settings)
        assert (await dispatcher.dispatch([_task(1)]))[0] is not None  # the group exists
        await c.redis.delete(task_stream(settings, "default"))  # as after a restart
        assert await dispatcher.room("default") == 2  # empty: up to the feed level
        groups = await c.redis.xinfo_groups(task_stream(settings, "default"))
        assert [g["name"] for g in groups] in ([b"workers"], ["workers"])


def _task(n: int) -> TaskMessage:
    execution = uuid4()
    return TaskMessage(
        task_id=f"{execution}:call:1",
        execution_id=execution,
        workspace_id="ws",
        node_id="call",
        attempt=1,
        queue="default",
        type="http_request",
        config={"url": f"http://example.test/{n}"},
    )


def _counted_dispatcher(c: Container) -> tuple[Dispatcher, list[list[str]]]:
    """A dispatcher that records the task ids of each `dispatch` (each pipeline it sends)."""
    dispatcher = Dispatcher(c.redis, c.settings)
    sends: list[list[str]] = []
    send = dispatcher.dispatch

    async def counted(tasks: list[TaskMessage], backlog: int | None = None) -> list[str | None]:
        sends.append([t.task_id for t in tasks])
        return await send(tasks, backlog)

    dispatcher.dispatch = counted  # type: ignore[method-assign]
    return dispatcher, sends


def _started(c: Container, n: int) -> list[list[Any]]:
    """The saved events of `n` starts run on the synchronous path (no fast dispatch)."""
    ws, wf = setup_workflow(c, ONE_CALL)
    command = m.StartExecution(workspace_id=ws, workflow_id=wf, input={})
    return [c.bus.handle(command).saved for _ in range(n)]


async def _stream_task_ids(c: Container) -> list[str]:
    entries = await c.redis.xrange(task_stream(c.settings, "default"))
    return [json.loads(f[b"task"])["task_id"] for _, f in entries]


async def test_saves_durable_in_the_same_loop_turn_send_their_tasks_in_one_pipeline(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        dispatcher, sends = _counted_dispatcher(c)
        *saves, later = _started(c, 6)

        async def saved(events: list[Any]) -> list[str]:
            await dispatcher.after_save(events)
            return await _stream_task_ids(c)  # what the stream holds once this save returns

        seen = await asyncio.gather(*(saved(events) for events in saves))
        assert [len(sent) for sent in sends] == [5]
        for events, in_stream in zip(saves, seen, strict=True):
            [task] = tasks_of(events)
            assert task.task_id in in_stream
        await dispatcher.after_save(later)  # a later turn: a send of its own
        assert [len(sent) for sent in sends] == [5, 1]
        assert len(await _stream_task_ids(c)) == 6


async def test_a_cancelled_save_does_not_cancel_the_others_gathered_send(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        dispatcher = Dispatcher(c.redis, c.settings)
        first, second = _started(c, 2)
        cancelled = asyncio.ensure_future(dispatcher.after_save(first))
        kept = asyncio.ensure_future(dispatcher.after_save(second))
        await asyncio.sleep(0)  # both joined the gathering send
        cancelled.cancel()
        await kept
        expected = [t.task_id for t in tasks_of(first) + tasks_of(second)]
        assert sorted(await _stream_task_ids(c)) == sorted(expected)


async def test_claimed_tells_which_tasks_someone_sent(fresh_settings: Settings) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        dispatcher = Dispatcher(c.redis, c.settings)
        sent, unsent = _task(1), _task(2)
        [sent_entry] = await dispatcher.dispatch([sent])
        assert await dispatcher.claimed([sent, unsent]) == [sent_entry, None]
        assert await dispatcher.dispatch([sent]) == [sent_entry]  # never twice
        assert await _stream_task_ids(c) == [sent.task_id]


async def test_the_fast_path_stops_at_the_backlog_and_for_workspaces_matching_holds(
    fresh_settings: Settings,
) -> None:
    """Issue 12, defect 1: every task went into the stream at once (61.5k entries in the issue's
    run, far more than workers could start): now the fast path leaves a task unsent when the
    stream holds LINKFLOW_DISPATCH_BACKLOG unread entries, or matching holds tasks of its
    workspace back; matching then feeds them (test_matching), to LINKFLOW_DISPATCH_FEED_LEVEL
    unread entries, at most half the backlog."""
    settings = fresh_settings.model_copy(update={"dispatch_backlog": 4})
    async with roles(settings) as r:
        c = r.container
        dispatcher = Dispatcher(c.redis, settings)
        tasks = [_task(n) for n in range(6)]
        entries = await dispatcher.dispatch(tasks[:5])
        assert [e is not None for e in entries] == [True, True, True, True, False]
        assert await dispatcher.room("default") == -2  # the feed fills to 2 (half) only
        # A worker reads three of them: the feed may add one, the fast path three.
        await c.redis.xreadgroup("workers", "w1", {task_stream(settings, "default"): ">"}, 3)
        assert await dispatcher.room("default") == 1
        # A lower feed level keeps fewer of a flood's tasks in front of others' fast path.
        lower = Dispatcher(c.redis, settings.model_copy(update={"dispatch_feed_level": 1}))
        assert await lower.room("default") == 0
        # While matching holds tasks of a workspace, the fast path sends none of its tasks…
        await dispatcher.hold("default", {"ws": True})
        assert await dispatcher.dispatch(tasks[4:5]) == [None]
        # … but another workspace's go straight to the stream.
        other = tasks[5].model_copy(update={"workspace_id": "other"})
        assert (await dispatcher.dispatch([other]))[0] is not None
        await dispatcher.hold("default", {"ws": False})
        assert (await dispatcher.dispatch(tasks[4:5]))[0] is not None
        # Matching's feed sends whatever it measured room for (backlog 0: no check).
        assert (await dispatcher.dispatch([_task(9)], backlog=0))[0] is not None
        assert len(await _stream_task_ids(c)) == 7


async def test_the_fast_path_creates_the_workers_group_again_after_redis_lost_it(
    fresh_settings: Settings,
) -> None:
    """After a Redis restart the group this process created is gone: the send recreates it
    (it logged a NOGROUP traceback per send until matching did)."""
    async with roles(fresh_settings) as r:
        c = r.container
        dispatcher = Dispatcher(c.redis, c.settings)
        assert (await dispatcher.dispatch([_task(1)]))[0] is not None
        await c.redis.flushall()  # as a restart of a Redis that keeps nothing on disk
        assert (await dispatcher.dispatch([_task(2)]))[0] is not None
        assert len(await _stream_task_ids(c)) == 1
        groups = await c.redis.xinfo_groups(task_stream(c.settings, "default"))
        assert [g["name"] for g in groups] in ([b"workers"], ["workers"])
