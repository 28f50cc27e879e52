"""Matching's outstanding-task rows on the real PostgreSQL and Redis: a pure workflow leaves no
row; a row is deleted when its attempt ends, also when the attempt ends while matching is down
(matching reloads the rows it keeps in memory at start)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import aiohttp
from stack import eventually, roles
from target import serve_target
from test_pipeline import closed, setup_workflow, start

from commands import models as m
from engine.matching import HOLD_LINGER_S
from gateways.bootstrap import Container
from infra.eventlog import head_position
from infra.settings import Settings
from infra.streams import task_stream

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


TAGGED_CALL = {
    "name": "tagged call",
    "nodes": [
        {
            "id": "call",
            "type": "http_request",
            "config": {"url": "{{ trigger.base }}/count/{{ trigger.tag }}?delay_ms=20"},
        }
    ],
}


async def _calls(base: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/calls") as resp:
        return list(await resp.json())


async def test_held_tasks_go_round_robin_across_workspaces_as_the_backlog_drains(
    fresh_settings: Settings,
) -> None:
    """Issue 12: one workspace's flood stood in front of every other workspace's tasks, in a
    stream that grew without bound. Past the backlog (here 2), matching holds tasks back and
    lets them go one workspace at a time, each task once. Before, B's call came after all of
    A's."""
    settings = fresh_settings.model_copy(update={"dispatch_backlog": 2, "worker_concurrency": 1})
    async with serve_target() as base, roles(settings, "relay", "matching") as r:
        c = r.container
        ws_a, wf_a = setup_workflow(c, TAGGED_CALL)
        ws_b, wf_b = setup_workflow(c, TAGGED_CALL)
        flood = [await start(c, ws_a, wf_a, {"base": base, "tag": "a"}) for _ in range(8)]
        stream = task_stream(settings, "default")
        assert await c.redis.xlen(stream) == 2  # the backlog's worth; the rest is held
        late = await start(c, ws_b, wf_b, {"base": base, "tag": "b"})
        for execution in [*flood, late]:
            await eventually(lambda e=execution: task_rows(c, e), timeout=10)  # type: ignore[misc]
        r.start("worker")
        order = await eventually(lambda: _calls_when(base, 9), timeout=20)
        assert sorted(order) == ["a"] * 8 + ["b"]  # each task once
        assert order.index("b") <= 4, order  # B's turn came after at most two more of A's
        # A stays held a while after its last held task went out (a flood the feed keeps up
        # with does not win the whole backlog back at each lull), then the fast path is back.
        held_a = settings.key(f"held:default:{ws_a}")
        assert await c.redis.exists(held_a) == 1
        await eventually(lambda: _gone(c, held_a), timeout=HOLD_LINGER_S + 5)
        async with c.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM engine_tasks WHERE entry_id IS NULL"
            )
            assert (await cur.fetchone())["n"] == 0  # every held task was sent, and recorded
            await conn.commit()


async def _gone(c: Container, key: str) -> bool:
    return await c.redis.exists(key) == 0


async def _calls_when(base: str, n: int) -> list[str] | None:
    order = await _calls(base)
    return order if len(order) >= n else None
