"""Matching's outstanding-task rows on the real PostgreSQL and Redis: a pure workflow leaves no
row; a row is deleted when its attempt ends, also when the attempt ends while matching is down
(matching reloads the rows it keeps in memory at start)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from stack import eventually, roles
from test_pipeline import closed, setup_workflow, start

from commands import models as m
from gateways.bootstrap import Container
from infra.eventlog import head_position
from infra.settings import Settings

PURE = {
    "name": "pure",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"x": 1}}},
        {"id": "b", "type": "transform", "config": {"set": {"y": 2}}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}
ONE_CALL = {
    "name": "one call",
    "nodes": [{"id": "call", "type": "http_request", "config": {"url": "http://127.0.0.1:9/x"}}],
    "edges": [],
}


async def task_rows(c: Container, execution: UUID) -> list[dict[str, Any]]:
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT task_id FROM engine_tasks WHERE execution_id = %s", (execution,)
        )
        rows = await cur.fetchall()
        await conn.commit()
        return rows


async def matching_at_head(c: Container) -> bool:
    async with c.pool.connection() as conn:
        head = await head_position(conn)
        cur = await conn.execute(
            "SELECT position FROM consumer_positions WHERE consumer = 'matching'"
        )
        row = await cur.fetchone()
        await conn.commit()
    return row is not None and row["position"] >= head


async def test_a_pure_workflow_leaves_no_task_row(fresh_settings: Settings) -> None:
    async with roles(fresh_settings, "relay", "projector", "matching") as r:
        c = r.container
        ws, wf = setup_workflow(c, PURE)
        execution = await start(c, ws, wf, {})
        assert (await eventually(lambda: closed(c, execution)))["status"] == "completed"
        await eventually(lambda: matching_at_head(c))
        assert await task_rows(c, execution) == []


async def test_a_row_is_deleted_when_its_attempt_ends_while_matching_is_down(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings, "relay", "matching") as r:
        c = r.container
        ws, wf = setup_workflow(c, ONE_CALL)
        execution = await start(c, ws, wf, {})
        [row] = await eventually(lambda: task_rows(c, execution), timeout=10)
        assert row["task_id"] == f"{execution}:call:1"
        await r.stop("matching")
        # No worker runs: the result is recorded as a worker would record it.
        await c.bus.execute(
            m.CompleteNode(execution_id=execution, node_id="call", attempt=1, output={"ok": 1})
        )
        r.start("matching")

        async def gone() -> bool:
            return await task_rows(c, execution) == []

        await eventually(gone, timeout=10)
