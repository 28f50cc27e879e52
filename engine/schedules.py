"""Cron schedules (part of the timers role): the `engine_schedules` table, fed by workflow events,
and the loop that starts an execution for each due time.

`Schedules` (consumer group / position `schedules`) follows WorkflowActivated (the activated
version's trigger decides: a schedule trigger makes the row active with the first due time after
the activation), WorkflowDeactivated and WorkflowArchived (inactive); each change is guarded by
the workflow's version and commits with the position.

`Scheduler` claims due rows (`FOR UPDATE SKIP LOCKED`, so it may run in every timers process),
asks `domain.schedule.plan` which due times to run under the catch-up policy, sends
`StartExecution(trigger="schedule", idempotency_key="schedule:<due time>")` for each and only
then moves `next_due`. The key names one execution id per due time (see
commands.handlers.execution_id_for), so a crash before the row update, or a second process,
repeats the start and gets the same execution. A start refused with `trigger_inactive` (the
workflow is no longer active with a schedule) deactivates the row. The clock is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from commands.bus import CommandBus
from commands.handlers import ExecutionAnswer
from commands.models import StartExecution
from domain.base import DomainError
from domain.schedule import Schedule, iso_utc, plan
from domain.workflow import Workflow
from infra import metrics
from infra.consumer import EventConsumer
from infra.db import DictConnection, DictPool
from infra.eventlog import LoggedEvent
from infra.logging import get_logger, log_event
from infra.origin import Origin, schedule_actor
from infra.outages import OUTAGES

log = get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Schedules(EventConsumer):
    name = "schedules"
    linger_ms = 200
    handles = (
        Workflow.WorkflowActivated,
        Workflow.WorkflowDeactivated,
        Workflow.WorkflowArchived,
    )

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        for _, event in events:
            if isinstance(event, Workflow.WorkflowActivated):
                await self._activated(conn, event)
            elif isinstance(event, Workflow.WorkflowDeactivated | Workflow.WorkflowArchived):
                await self._deactivate(conn, event)

    async def _activated(self, conn: DictConnection, event: Workflow.WorkflowActivated) -> None:
        workflow: Workflow = await asyncio.to_thread(
            self.store.repository.get, event.originator_id, version=event.originator_version
        )
        trigger = workflow.definition(event.active_version).get("trigger", {})
        schedule = Schedule.of_trigger(trigger)
        if schedule is None:
            await self._deactivate(conn, event)
            return
        await conn.execute(
            "INSERT INTO engine_schedules (workflow_id, workspace_id, version, workflow_version,"
            " cron, timezone, catch_up, next_due, active)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)"
            " ON CONFLICT (workflow_id) DO UPDATE SET version = EXCLUDED.version,"
            " workflow_version = EXCLUDED.workflow_version, cron = EXCLUDED.cron,"
            " timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up,"
            " next_due = EXCLUDED.next_due, active = true, updated_at = now()"
            " WHERE engine_schedules.version < EXCLUDED.version",
            (
                event.originator_id,
                event.workspace_id,
                event.originator_version,
                event.active_version,
                schedule.cron,
                schedule.timezone,
                schedule.catch_up,
                schedule.next_after(event.timestamp),
            ),
        )
        log_event(
            log,
            "schedule_activated",
            workflow_id=event.originator_id,
            version=event.active_version,
            cron=schedule.cron,
            timezone=schedule.timezone,
        )

    async def _deactivate(self, conn: DictConnection, event: Workflow.Event) -> None:
        await conn.execute(
            "UPDATE engine_schedules SET active = false, version = %s, updated_at = now()"
            " WHERE workflow_id = %s AND version < %s",
            (event.originator_version, event.originator_id, event.originator_version),
        )


class Outcome(NamedTuple):
    """How starting one schedule's due times went; "failed" leaves the row to the next round."""

    status: Literal["done", "inactive", "failed"]
    started: int
    next_due: datetime | None = None
    last_due: datetime | None = None


class Scheduler:
    """Starts the executions of due schedules; safe to run in several processes at once."""

    def __init__(
        self, pool: DictPool, bus: CommandBus, clock: Clock = utc_now, poll_s: float = 1.0
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.clock = clock
        self.poll_s = poll_s

    async def fire_due(self, batch: int = 100) -> int:
        """Start the executions of the schedules due now; returns how many started."""
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT * FROM engine_schedules WHERE active AND next_due <= %s"
                " ORDER BY next_due LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, batch),
            )
            rows = await cur.fetchall()
            outcomes = await asyncio.gather(*(self._run(row, now) for row in rows))
            for row, outcome in zip(rows, outcomes, strict=True):
                if outcome.status == "done":
                    await conn.execute(
                        "UPDATE engine_schedules SET next_due = %s,"
                        " last_due = coalesce(%s, last_due), updated_at = now()"
                        " WHERE workflow_id = %s AND version = %s",
                        (outcome.next_due, outcome.last_due, row["workflow_id"], row["version"]),
                    )
                elif outcome.status == "inactive":
                    await conn.execute(
                        "UPDATE engine_schedules SET active = false, updated_at = now()"
                        " WHERE workflow_id = %s AND version = %s",
                        (row["workflow_id"], row["version"]),
                    )
        return sum(outcome.started for outcome in outcomes)

    async def _run(self, row: dict[str, Any], now: datetime) -> Outcome:
        """Start the due times the plan names, oldest first."""
        schedule = Schedule(row["cron"], row["timezone"], row["catch_up"])
        todo = plan(schedule, row["next_due"], now)
        started = 0
        for due in todo.run:
            try:
                result = await self.bus.execute(
                    StartExecution(
                        workspace_id=row["workspace_id"],
                        workflow_id=row["workflow_id"],
                        trigger="schedule",
                        idempotency_key=f"schedule:{iso_utc(due)}",
                        input=schedule.input_for(due),
                    ),
                    origin=Origin(schedule_actor(row["workflow_id"])),
                )
            except DomainError as exc:
                if exc.code == "trigger_inactive":
                    log_event(log, "schedule_disabled", workflow_id=row["workflow_id"])
                    return Outcome("inactive", started)
                if exc.code != "idempotency_key_reused":  # started before, with another input
                    return self._failed(row, due, exc, started)
                continue
            except Exception as exc:
                return self._failed(row, due, exc, started)
            assert isinstance(result, ExecutionAnswer)
            if not result.repeated:
                started += 1
                metrics.SCHEDULE_RUNS.inc()
                log_event(
                    log,
                    "schedule_fired",
                    workflow_id=row["workflow_id"],
                    scheduled_at=iso_utc(due),
                    execution_id=str(result.execution_id),
                )
        if todo.skipped:
            metrics.SCHEDULE_SKIPPED.labels(schedule.catch_up).inc(todo.skipped)
            log_event(
                log,
                "schedule_skipped",
                workflow_id=row["workflow_id"],
                catch_up=schedule.catch_up,
                skipped=todo.skipped,
            )
        return Outcome("done", started, todo.next_due, todo.run[-1] if todo.run else None)

    @staticmethod
    def _failed(row: dict[str, Any], due: datetime, exc: Exception, started: int) -> Outcome:
        if OUTAGES.report(exc, where="schedule start") is not None:
            return Outcome("failed", started)
        log.error(
            "schedule_start_failed",
            extra={
                "fields": {
                    "workflow_id": str(row["workflow_id"]),
                    "scheduled_at": iso_utc(due),
                    "error": repr(exc),
                }
            },
        )
        return Outcome("failed", started)

    async def next_due_in(self) -> float:
        """Seconds (by the clock) until the earliest active due time, at most poll_s."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT min(next_due) AS at FROM engine_schedules WHERE active"
            )
            row = await cur.fetchone()
            await conn.commit()
        if row is None or row["at"] is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (row["at"] - self.clock()).total_seconds()))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            failed = True
            # PostgreSQL away: said once (infra.outages), tried again after a pause.
            with OUTAGES.guard("schedule loop failed", logger=log):
                if await self.fire_due() == 0:
                    # A due schedule whose start keeps failing must not spin the loop.
                    delay = await self.next_due_in() or min(0.2, self.poll_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                failed = False
            if failed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
