"""The callbacks consumer on the real PostgreSQL and Redis: its table is derived from the log, so
a restart mid-retry resumes, and a replay from position 0 rebuilds a delivered row without
sending the result again."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from callback_receiver import receiver
from stack import eventually, roles

from commands import models as m
from gateways.bootstrap import Container
from infra.settings import Settings

TRANSFORM = {
    "name": "t",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"v": 1}}}],
}


async def start_with_callback(c: Container, url: str) -> UUID:
    reg = c.bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    user, ws = UUID(reg.fields["user"]["id"]), UUID(reg.fields["workspace"]["id"])
    wf = c.bus.handle(m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=TRANSFORM))
    result = await c.bus.execute(
        m.StartExecution(workspace_id=ws, workflow_id=UUID(wf.fields["id"]), callback_url=url)
    )
    return result.execution_id


async def row(c: Container, execution_id: UUID) -> dict[str, Any] | None:
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM engine_callbacks WHERE execution_id = %s", (execution_id,)
        )
        found = await cur.fetchone()
        await conn.commit()
    return found


async def delivered(c: Container, execution_id: UUID) -> dict[str, Any] | None:
    found = await row(c, execution_id)
    return found if found and found["delivered_at"] else None


async def test_a_restart_mid_retry_resumes_and_a_replay_sends_nothing_again(
    fresh_settings: Settings,
) -> None:
    settings = fresh_settings.model_copy(
        update={"callback_backoff_s": 0.05, "callback_backoff_max_s": 0.1}
    )
    async with roles(settings, "relay", "callbacks") as r, receiver([500, 500]) as rec:
        c = r.container
        ex = await start_with_callback(c, rec.url)
        await eventually(lambda: _attempted(c, ex, 1))
        await r.stop("callbacks")  # down between two attempts
        r.start("callbacks")
        first = await eventually(lambda: delivered(c, ex))
        assert first["attempts"] == 3 and first["abandoned_at"] is None
        assert [d.answered for d in rec.deliveries] == [500, 500, 200]

        await r.stop("callbacks")
        async with c.pool.connection() as conn:
            await conn.execute("TRUNCATE engine_callbacks")
            await conn.execute(
                "UPDATE consumer_positions SET position = 0 WHERE consumer = 'callbacks'"
            )
            await conn.commit()
        r.start("callbacks")
        rebuilt = await eventually(lambda: delivered(c, ex))
        assert (rebuilt["attempts"], rebuilt["next_attempt_at"]) == (3, None)
        assert rebuilt["result"]["status"] == "completed"
        await r.stop("callbacks")  # its delivery loop has run: nothing was due
        assert len(rec.deliveries) == 3


async def _attempted(c: Container, execution_id: UUID, attempts: int) -> bool:
    found = await row(c, execution_id)
    return bool(found and found["attempts"] >= attempts)
