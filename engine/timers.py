"""Timers: durable due-times in `engine_timers`, fed by `TimerScheduled` events and fired as
`FireTimer` commands (delays, retry back-off, node and execution timeouts).

A timer row is deleted only after its FireTimer command is durable, so a timer survives any
restart; the Execution aggregate records `TimerFired` once and ignores repeats, so it fires once.
The firing loop claims due rows with `FOR UPDATE SKIP LOCKED`, so several timer processes can run.
Consumer group / position: `timers`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from commands.bus import CommandBus
from commands.handlers import Decision
from commands.models import FireTimer
from domain.execution import EXECUTION_CLOSED, Execution
from infra import metrics
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.logging import get_logger
from infra.outages import OUTAGES

log = get_logger(__name__)

RETRY_S = 0.5  # after a failed pass of the firing loop

_TIMER_TOPICS = frozenset(get_topic(c) for c in (Execution.TimerScheduled, Execution.TimerFired))


class Timers(EventConsumer):
    name = "timers"
    linger_ms = 50
    handles = (Execution.TimerScheduled, Execution.TimerFired, *EXECUTION_CLOSED)

    def __init__(self, bus: CommandBus, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus = bus
        self.wake = asyncio.Event()
        # Executions that have timer rows (or had: a fired timer's row goes, the id stays until
        # the close). Closings of other executions (most: a pure workflow has no timer) are
        # neither decoded nor applied.
        self.timed: set[UUID] = set()

    async def prepare_state(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT DISTINCT execution_id FROM engine_timers")
            rows = await cur.fetchall()
            await conn.commit()
        self.timed = {row["execution_id"] for row in rows}

    def decode_batch(self, events: list[LoggedEvent]) -> list[tuple[LoggedEvent, Any]]:
        """Timer events; closings only of executions with timers (or scheduling one earlier in
        this batch)."""
        wanted: list[tuple[LoggedEvent, Any]] = []
        timed_here: set[UUID] = set()
        for e in events:
            if e.topic in _TIMER_TOPICS:
                wanted.append((e, self.decode(e)))
                timed_here.add(e.originator_id)
            elif e.topic in self.topics and (
                e.originator_id in self.timed or e.originator_id in timed_here
            ):
                wanted.append((e, self.decode(e)))
        return wanted

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        closed = [e.originator_id for _, e in events if isinstance(e, EXECUTION_CLOSED)]
        async with conn.pipeline():  # one round trip for the batch's statements
            await self._apply(conn, events, closed)

    async def _apply(
        self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]], closed: list[Any]
    ) -> None:
        for _, event in events:
            if isinstance(event, Execution.TimerScheduled):
                await conn.execute(
                    "INSERT INTO engine_timers (timer_id, execution_id, workspace_id, kind,"
                    " fire_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (timer_id) DO NOTHING",
                    (
                        event.timer_id,
                        event.originator_id,
                        event.workspace_id,
                        event.kind,
                        event.fire_at,
                    ),
                )
            elif isinstance(event, Execution.TimerFired):
                await conn.execute(
                    "DELETE FROM engine_timers WHERE timer_id = %s", (event.timer_id,)
                )
        if closed:  # one statement for the batch: most executions close without a timer left
            await conn.execute("DELETE FROM engine_timers WHERE execution_id = ANY(%b)", (closed,))

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        scheduled = False
        for _, event in events:
            if isinstance(event, Execution.TimerScheduled):
                self.timed.add(event.originator_id)
                scheduled = True
            elif isinstance(event, EXECUTION_CLOSED):
                self.timed.discard(event.originator_id)
        if scheduled:
            self.wake.set()

    async def fire_due(self, batch: int = 100) -> int:
        """Fire the timers that are due now; returns how many fired."""
        fired = 0
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT timer_id, execution_id, kind FROM engine_timers WHERE fire_at <= %s"
                    " ORDER BY fire_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (datetime.now(UTC), batch),
                )
                due = await cur.fetchall()
                results = await asyncio.gather(
                    *(
                        self.bus.execute(
                            FireTimer(execution_id=row["execution_id"], timer_id=row["timer_id"])
                        )
                        for row in due
                    ),
                    return_exceptions=True,
                )
                done = []
                for row, result in zip(due, results, strict=True):
                    if isinstance(result, BaseException):
                        # The row stays: fired again on the next pass.
                        if OUTAGES.report(result, where="timer fire") is None:
                            log.error(
                                "timer_fire_failed",
                                extra={
                                    "fields": {"timer_id": row["timer_id"], "error": repr(result)}
                                },
                            )
                        continue
                    done.append(row["timer_id"])
                    if isinstance(result, Decision) and result.accepted:
                        fired += 1
                        metrics.TIMERS_FIRED.labels(row["kind"]).inc()
                if done:
                    await conn.execute(
                        "DELETE FROM engine_timers WHERE timer_id = ANY(%b)", (done,)
                    )
        return fired

    async def next_due_in(self) -> float:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT min(fire_at) AS at FROM engine_timers")
            row = await cur.fetchone()
            await conn.commit()
        if row is None or row["at"] is None:
            return 1.0
        return max(0.0, min(1.0, (row["at"] - datetime.now(UTC)).total_seconds()))

    async def fire_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            failed = True
            # PostgreSQL away: said once (infra.outages), tried again after a pause.
            with OUTAGES.guard("timer loop failed", logger=log):
                if await self.fire_due() == 0:
                    delay = await self.next_due_in()
                    self.wake.clear()
                    # A due timer whose command keeps failing must not spin the loop.
                    delay = delay or 0.2
                    if delay > 0:
                        waiters = {
                            asyncio.ensure_future(self.wake.wait()),
                            asyncio.ensure_future(stop.wait()),
                        }
                        _, pending = await asyncio.wait(
                            waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                        )
                        for fut in pending:
                            fut.cancel()
                failed = False
            if failed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_S)
