"""Is a task's attempt still current? The worker asks before it runs anything, so that an
attempt that has ended (its execution canceled, timed out or failed, a repeated or reclaimed
entry whose result is already recorded) never makes an outbound call.

The cheap answer comes from the task's `fence`: a version of the execution at which the attempt
was current. If the execution has no event after it, nothing can have ended the attempt. The
checks of the tasks a worker starts together are gathered into one query (the latest version of
each execution, an index probe per execution). Only when the execution moved on is the
Execution itself read (brought up to date from the event store) to decide.

Imported by `engine.worker`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from engine.tasks import TaskMessage
from infra.db import DictPool
from infra.eventstore import EVENTS_TABLE

# Decides one task on the write model (a thread's read of the Execution): whether its attempt
# still awaits a result.
SlowCheck = Callable[[TaskMessage], Awaitable[bool]]

# One index probe per execution (the primary key, backwards, first row), whatever the table's
# statistics: a `max … = ANY(…) GROUP BY` got a parallel plan on an unanalysed log (10 ms a
# check instead of 0.1 ms, and http-3 throughput fell to a third after a long run).
_LATEST = (
    "SELECT u.id AS originator_id,"
    f" (SELECT max(originator_version) FROM {EVENTS_TABLE} WHERE originator_id = u.id)"
    " AS version FROM unnest(%b::uuid[]) AS u(id)"
)


class AttemptFence:
    def __init__(self, pool: DictPool, slow_check: SlowCheck) -> None:
        self.pool = pool
        self.slow_check = slow_check
        self._gathering: tuple[set[UUID], asyncio.Future[dict[UUID, int]]] | None = None

    async def is_current(self, task: TaskMessage) -> bool:
        if task.fence:
            latest = await self._latest(task.execution_id)
            if latest == task.fence:
                return True
            if latest is None:  # no such execution (yet: a task is sent after its save)
                return False
        return await self.slow_check(task)

    async def _latest(self, execution_id: UUID) -> int | None:
        """The execution's latest version, asked together with the other checks that arrive
        in the same loop turn."""
        if self._gathering is None:
            self._gathering = (set(), asyncio.ensure_future(self._query()))
        ids, answer = self._gathering
        ids.add(execution_id)
        return (await asyncio.shield(answer)).get(execution_id)

    async def _query(self) -> dict[UUID, int]:
        await asyncio.sleep(0)  # the checks started in this turn join
        assert self._gathering is not None
        ids, _ = self._gathering
        self._gathering = None
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LATEST, (list(ids),))
            rows: list[Any] = await cur.fetchall()
            await conn.commit()
        return {row["originator_id"]: row["version"] for row in rows if row["version"]}
