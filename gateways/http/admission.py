"""Admission control: a workspace may have at most LINKFLOW_MAX_QUEUED_PER_WORKSPACE executions
open; past it, a start answers 429 `too_many_executions` with `Retry-After`, and nothing already
accepted is dropped (`../shared/API.md`, "Back-pressure").

The count is the visibility read model's queued and running executions of the workspace (one
index-only count, refreshed at most every `REFRESH_S` per workspace and shared by concurrent
requests), plus the starts this gateway accepted that the projector had not applied when it
counted (each start's answer carries its position). Closings the projector has not applied yet
count as open: the estimate errs towards refusing. Several gateways each add only their own
starts, so the cap may be passed by what the others accepted within one refresh.

Imported by `gateways.http.app` and the routes that start executions.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from uuid import UUID

from aiohttp import web

from commands import lookups
from commands.models import StartExecution
from gateways.http.context import container
from gateways.http.errors import ApiError
from infra import metrics
from infra.db import DictPool
from projections import queries

REFRESH_S = 0.5
RETRY_AFTER_S = 1


@dataclass
class _Count:
    open: int = 0
    position: int = 0  # the projector's position the count is as of
    at: float = float("-inf")  # monotonic time of the count
    refreshing: asyncio.Future[None] | None = None
    recent: deque[int] = field(default_factory=deque)  # positions of this gateway's starts


class Admission:
    def __init__(self, pool: DictPool, limit: int) -> None:
        self.pool = pool
        self.limit = limit
        self._counts: dict[UUID, _Count] = {}

    async def admit(self, workspace_id: UUID) -> None:
        """Raise 429 `too_many_executions` when the workspace has its fill of open executions."""
        if self.limit <= 0:
            return
        count = await self._current(workspace_id)
        while count.recent and count.recent[0] <= count.position:
            count.recent.popleft()  # counted by the read model now
        if count.open + len(count.recent) >= self.limit:
            metrics.STARTS_REFUSED.inc()
            raise ApiError(
                429,
                "too_many_executions",
                f"the workspace has {self.limit} executions open or more; retry later",
                [{"path": "", "message": f"at most {self.limit} open executions"}],
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    def started(self, workspace_id: UUID, position: int) -> None:
        """A start this gateway accepted (its answer's position)."""
        count = self._counts.get(workspace_id)
        if count is not None and position > count.position:
            count.recent.append(position)

    async def _current(self, workspace_id: UUID) -> _Count:
        count = self._counts.setdefault(workspace_id, _Count())
        if time.monotonic() - count.at < REFRESH_S:
            return count
        if count.refreshing is None:
            count.refreshing = asyncio.ensure_future(self._refresh(workspace_id, count))
        try:
            await asyncio.shield(count.refreshing)
        finally:
            count.refreshing = None
        return count

    async def _refresh(self, workspace_id: UUID, count: _Count) -> None:
        async with self.pool.connection() as conn:
            count.open, count.position = await queries.open_executions(conn, workspace_id)
            await conn.commit()
        count.at = time.monotonic()


ADMISSION: web.AppKey[Admission] = web.AppKey("linkflow_admission", Admission)


async def admit(request: web.Request, cmd: StartExecution) -> None:
    """429 `too_many_executions` past the workspace's cap of open executions, unless the start
    repeats one already accepted (same Idempotency-Key): that one is answered as always."""
    try:
        await request.app[ADMISSION].admit(cmd.workspace_id)
    except ApiError:
        key = cmd.idempotency_key
        if key is None or not await container(request).bus.run(
            lookups.started_before, cmd.workflow_id, key
        ):
            raise
