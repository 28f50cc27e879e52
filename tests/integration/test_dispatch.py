"""Task dispatch on the real PostgreSQL and Redis (`engine.dispatch`): the command's own process
sends a scheduled task at once, without the relay or matching; matching then records it without
sending it again; whichever of the two comes first, the stream holds the task once."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from stack import eventually, roles
from test_matching import ONE_CALL, task_rows
from test_pipeline import setup_workflow

from commands import models as m
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
        execution = UUID(result.fields["execution_id"])
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
        execution = UUID(result.fields["execution_id"])
        await eventually(lambda: task_rows(c, execution), timeout=10)
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
        execution = UUID(result.fields["execution_id"])
        [(_, task)] = await entries_for(c, execution)
        assert task["node_id"] == "call"
