"""What each system recorded, read straight from its database: how many executions closed (and
when), which are still running, and the projector's position against the event-log head. The
load generator counts completions and latencies from these, never from client-side guesses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import psycopg

from infra.eventstore import EVENTS_TABLE

D = TypeVar("D", bound="_Database")
# The consumers whose lag behind the event log the benchmark samples (`positions`): the
# projector, the audit chain (engine.audit_chain) and the position up to which every chain
# head is in a signed checkpoint.
LAGGED = ("projector", "audit", "audit_checkpoints")


class Records(Protocol):
    async def running(self) -> int:
        """Executions started and not closed yet (as far as the records show; cheap)."""
        ...

    async def settle(self, timeout_s: float) -> None: ...

    async def closed_between(self, since: float, until: float) -> int: ...

    async def close_times(self, ids: list[str]) -> dict[str, tuple[bool, float]]:
        """id → (completed successfully, close time) of those of `ids` that closed."""
        ...

    async def close(self) -> None: ...


class _Database:
    """One autocommit connection to a system's database, and a one-number query."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls: type[D], conninfo: str) -> D:
        return cls(await psycopg.AsyncConnection.connect(conninfo, autocommit=True))

    async def _one(self, query: str, params: tuple[object, ...] = ()) -> int:
        cur = await self.conn.execute(query, params)  # type: ignore[arg-type]
        row = await cur.fetchone()
        return int(row[0] or 0) if row else 0


class LinkFlowRecords(_Database):
    """LinkFlow's read model (rm_executions) and event log; `closed_at` is the engine's time.
    Set `workspace_id` (the benchmark's one workspace) so that `running` uses an index."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        super().__init__(conn)
        self.workspace_id: str | None = None

    async def running(self) -> int:
        if self.workspace_id is None:
            return await self._one("SELECT count(*) FROM rm_executions WHERE status = 'running'")
        return await self._one(
            "SELECT count(*) FROM rm_executions WHERE workspace_id = %s AND status = 'running'",
            (uuid.UUID(self.workspace_id),),
        )

    async def positions(self) -> tuple[int, dict[str, int]]:
        """(head of the event log, {consumer: its position}) for the LAGGED consumers: the
        projector, the audit chain and the chain's signed checkpoints."""
        cur = await self.conn.execute(
            f"SELECT (SELECT max(notification_id) FROM {EVENTS_TABLE}),"  # noqa: S608
            " (SELECT coalesce(json_object_agg(consumer, position), '{}') FROM consumer_positions"
            "   WHERE consumer = ANY(%s))",
            (list(LAGGED),),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0] or 0), {name: int(row[1].get(name, 0)) for name in LAGGED}

    async def settle(self, timeout_s: float) -> None:
        """Wait until the projector has applied everything written so far."""
        head, _ = await self.positions()
        deadline = time.monotonic() + timeout_s
        while (await self.positions())[1]["projector"] < head:
            if time.monotonic() > deadline:
                raise RuntimeError(f"projector did not reach {head} within {timeout_s}s")
            await asyncio.sleep(0.05)

    async def closed_between(self, since: float, until: float) -> int:
        return await self._one(
            "SELECT count(*) FROM rm_executions WHERE closed_at >= %s AND closed_at < %s",
            (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC)),
        )

    async def close_times(self, ids: list[str]) -> dict[str, tuple[bool, float]]:
        cur = await self.conn.execute(
            "SELECT id, status, closed_at FROM rm_executions"
            " WHERE id = ANY(%s) AND closed_at IS NOT NULL",
            ([uuid.UUID(i) for i in ids],),
        )
        return {str(r[0]): (r[1] == "completed", r[2].timestamp()) for r in await cur.fetchall()}

    async def close(self) -> None:
        await self.conn.close()


class DbosRecords(_Database):
    """DBOS's system database (dbos.workflow_status; `completed_at` is epoch milliseconds)."""

    async def running(self) -> int:
        return await self._one(
            "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('PENDING', 'ENQUEUED')"
        )

    async def settle(self, timeout_s: float) -> None:
        """DBOS writes its status rows itself: nothing to wait for."""

    async def closed_between(self, since: float, until: float) -> int:
        return await self._one(
            "SELECT count(*) FROM dbos.workflow_status WHERE completed_at >= %s"
            " AND completed_at < %s",
            (int(since * 1000), int(until * 1000)),
        )

    async def close_times(self, ids: list[str]) -> dict[str, tuple[bool, float]]:
        cur = await self.conn.execute(
            "SELECT workflow_uuid, status, completed_at FROM dbos.workflow_status"
            " WHERE workflow_uuid = ANY(%s) AND completed_at IS NOT NULL",
            (ids,),
        )
        return {r[0]: (r[1] == "SUCCESS", r[2] / 1000) for r in await cur.fetchall()}

    async def close(self) -> None:
        await self.conn.close()
