"""What event consumers skip, on the real PostgreSQL and Redis: a batch with nothing to apply
opens no transaction (its position is written later), and timers and callbacks apply an
execution's close only if they hold a row for it, rows they reload when they restart."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from stack import eventually, roles
from test_pipeline import setup_workflow

from commands import models as m
from engine.timers import Timers
from gateways.bootstrap import Container
from gateways.roles import _broker
from infra.eventlog import head_position, load_position
from infra.settings import Settings
from infra.streams import events_stream

PURE = {
    "name": "pure",
    "nodes": [{"id": "a", "type": "transform", "config": {"set": {"x": 1}}}],
}
ONE_CALL_WITH_TIMEOUT = {
    "name": "one call, a time limit",
    "nodes": [{"id": "call", "type": "http_request", "config": {"url": "http://127.0.0.1:9/x"}}],
    "settings": {"timeout_s": 600},
}


async def rows(c: Container, query: str, execution: UUID) -> list[dict[str, Any]]:
    async with c.pool.connection() as conn:
        cur = await conn.execute(query, (execution,))
        found = await cur.fetchall()
        await conn.commit()
        return found


async def started(c: Container, wf: UUID, ws: UUID, **extra: Any) -> UUID:
    cmd = m.StartExecution(workspace_id=ws, workflow_id=wf, input={}, **extra)
    return (await c.bus.execute(cmd)).execution_id


async def complete_call(c: Container, execution: UUID) -> None:
    """No worker runs: the result is recorded as a worker would record it."""
    await c.bus.execute(
        m.CompleteNode(execution_id=execution, node_id="call", attempt=1, output={"ok": 1})
    )


async def test_a_batch_with_nothing_to_apply_moves_the_position_only_in_memory_until_saved(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings) as r:
        c = r.container
        ws, wf = setup_workflow(c, PURE)
        await started(c, wf, ws)  # no timer anywhere in the log
        timers = Timers(
            c.bus, c.store, c.pool, c.redis, _broker(c.settings), events_stream(c.settings)
        )
        await timers.prepare()
        assert await timers.catch_up() > 0
        async with c.pool.connection() as conn:
            head = await head_position(conn)
            saved = await load_position(conn, "timers")
            await conn.commit()
        assert (timers.position, timers.saved_position, saved) == (head, 0, 0)
        await timers.save_position()
        async with c.pool.connection() as conn:
            assert await load_position(conn, "timers") == head
            await conn.commit()


async def test_timer_rows_go_when_the_execution_closes_while_timers_is_down(
    fresh_settings: Settings,
) -> None:
    query = "SELECT timer_id FROM engine_timers WHERE execution_id = %s"
    async with roles(fresh_settings, "relay", "timers") as r:
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL_WITH_TIMEOUT)
        execution = await started(c, wf, ws)
        await eventually(lambda: rows(c, query, execution), timeout=10)
        await r.stop("timers")
        await complete_call(c, execution)
        r.start("timers")  # it reloads which executions have timers

        async def gone() -> bool:
            return await rows(c, query, execution) == []

        await eventually(gone, timeout=10)


async def test_a_callback_gets_its_result_when_the_execution_closes_while_callbacks_is_down(
    fresh_settings: Settings,
) -> None:
    query = "SELECT result FROM engine_callbacks WHERE execution_id = %s"
    async with roles(fresh_settings, "relay", "callbacks") as r:
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL_WITH_TIMEOUT)
        execution = await started(c, wf, ws, callback_url="http://127.0.0.1:9/cb")
        assert await eventually(lambda: rows(c, query, execution), timeout=10) == [{"result": None}]
        await r.stop("callbacks")
        await complete_call(c, execution)
        r.start("callbacks")  # it reloads which executions await a result

        async def result() -> Any:
            found = await rows(c, query, execution)
            return found and found[0]["result"]

        assert (await eventually(result, timeout=10))["status"] == "completed"
