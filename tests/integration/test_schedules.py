"""Cron schedules on the real PostgreSQL and Redis, in-process, with a controllable clock.

The clock drives both the schedulers under test and the command handlers (so that activation and
deactivation events carry the same time the schedulers see); nothing waits for real minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from stack import eventually, roles

from commands import handlers
from commands import models as m
from gateways.bootstrap import Container
from gateways.roles import run_schedules
from infra.eventstore import EVENTS_TABLE
from infra.settings import Settings

START = datetime(2026, 1, 5, 10, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        assert at >= self.at, "the clock only moves forward"
        self.at = at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock(START)
    monkeypatch.setattr(handlers, "now", fake)
    yield fake


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def schedule_workflow(c: Container, cron: str, **trigger: Any) -> tuple[UUID, UUID]:
    reg = c.bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    ws = UUID(reg.fields["workspace"]["id"])
    definition = {
        "name": "every so often",
        "trigger": {"type": "schedule", "cron": cron, **trigger},
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"ran": True}}}],
    }
    wf = c.bus.handle(
        m.CreateWorkflow(
            workspace_id=ws, actor_id=UUID(reg.fields["user"]["id"]), definition=definition
        )
    )
    workflow = UUID(wf.fields["id"])
    c.bus.handle(m.ActivateWorkflow(workspace_id=ws, workflow_id=workflow))
    return ws, workflow


@asynccontextmanager
async def scheduler(c: Container, clock: FakeClock) -> AsyncIterator[None]:
    """One timer process's schedules part (consumer + scheduler), stopped at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_schedules(c, stop, clock=clock, poll_s=0.05))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def schedule_row(c: Container, workflow: UUID) -> dict[str, Any] | None:
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM engine_schedules WHERE workflow_id = %s", (workflow,)
        )
        row = await cur.fetchone()
        await conn.commit()
        return row


async def settled(c: Container, workflow: UUID, clock: FakeClock) -> bool:
    """The scheduler has handled every due time up to the clock (or the schedule is off)."""
    row = await schedule_row(c, workflow)
    return bool(row) and (not row["active"] or row["next_due"] > clock())


async def advance(c: Container, clock: FakeClock, at: datetime, *workflows: UUID) -> None:
    clock.set(at)
    for workflow in workflows:
        await eventually(lambda w=workflow: settled(c, w, clock), timeout=10)


async def runs(c: Container, workflow: UUID) -> list[str]:
    """`scheduled_at` of every execution of the workflow in the event store, in order."""
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {EVENTS_TABLE}"
            " WHERE topic LIKE %s ORDER BY notification_id",
            ("%ExecutionStarted",),
        )
        rows = await cur.fetchall()
        await conn.commit()
    started = [
        c.store.decode(
            row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"])
        )
        for row in rows
    ]
    mine = [event for event in started if event.workflow_id == str(workflow)]
    assert all(event.trigger == "schedule" for event in mine)
    return sorted(event.input["scheduled_at"] for event in mine)


def iso(*times: datetime) -> list[str]:
    return [t.isoformat().replace("+00:00", "Z") for t in times]


async def active(c: Container, workflow: UUID, expected: bool) -> bool:
    row = await schedule_row(c, workflow)
    return row is not None and row["active"] is expected


async def test_each_due_time_starts_exactly_one_execution(
    fresh_settings: Settings, clock: FakeClock
) -> None:
    async with roles(fresh_settings, "relay") as r, scheduler(r.container, clock):
        c = r.container
        _, wf = schedule_workflow(c, "*/5 * * * *")
        await eventually(lambda: active(c, wf, True), timeout=10)
        row = await schedule_row(c, wf)
        assert row is not None and row["next_due"] == utc(2026, 1, 5, 10, 5)
        expected: list[datetime] = []
        for minute in (5, 7, 10, 15, 20, 25):
            due = utc(2026, 1, 5, 10, minute)
            await advance(c, clock, due + timedelta(seconds=3), wf)
            if minute % 5 == 0:
                expected.append(due)
            assert await runs(c, wf) == iso(*expected)


async def test_two_timer_processes_start_each_due_time_once(
    fresh_settings: Settings, clock: FakeClock
) -> None:
    async with roles(fresh_settings, "relay") as r, scheduler(r.container, clock):
        c = r.container
        workflows = [schedule_workflow(c, "*/5 * * * *", catch_up="all")[1] for _ in range(4)]
        async with scheduler(c, clock):  # a second process: its scheduler runs too
            for wf in workflows:
                await eventually(lambda w=wf: active(c, w, True), timeout=10)
            expected = [utc(2026, 1, 5, 10, m) for m in range(5, 60, 5)]
            await advance(c, clock, utc(2026, 1, 5, 10, 31), *workflows)  # 6 due times at once
            for due in expected[6:]:
                await advance(c, clock, due + timedelta(seconds=1), *workflows)
            for wf in workflows:
                assert await runs(c, wf) == iso(*expected)


@pytest.mark.parametrize(
    ("policy", "caught_up"),
    [
        ("latest", [utc(2026, 1, 5, 10, 20)]),
        ("all", [utc(2026, 1, 5, 10, m) for m in (10, 15, 20)]),
        ("none", []),
    ],
)
async def test_due_times_missed_while_down_follow_the_catch_up_policy(
    fresh_settings: Settings, clock: FakeClock, policy: str, caught_up: list[datetime]
) -> None:
    async with roles(fresh_settings, "relay") as r:
        c = r.container
        _, wf = schedule_workflow(c, "*/5 * * * *", catch_up=policy)
        async with scheduler(c, clock):
            await eventually(lambda: active(c, wf, True), timeout=10)
            await advance(c, clock, utc(2026, 1, 5, 10, 5, 1), wf)
            assert await runs(c, wf) == iso(utc(2026, 1, 5, 10, 5))
        clock.set(utc(2026, 1, 5, 10, 23))  # down across 10:10, 10:15 and 10:20
        async with scheduler(c, clock):
            await eventually(lambda: settled(c, wf, clock), timeout=10)
            assert await runs(c, wf) == iso(utc(2026, 1, 5, 10, 5), *caught_up)
            await advance(c, clock, utc(2026, 1, 5, 10, 25, 1), wf)
            assert await runs(c, wf) == iso(
                utc(2026, 1, 5, 10, 5), *caught_up, utc(2026, 1, 5, 10, 25)
            )


async def test_deactivation_stops_the_schedule_and_reactivation_resumes_without_a_burst(
    fresh_settings: Settings, clock: FakeClock
) -> None:
    async with roles(fresh_settings, "relay") as r, scheduler(r.container, clock):
        c = r.container
        ws, wf = schedule_workflow(c, "*/5 * * * *")
        await eventually(lambda: active(c, wf, True), timeout=10)
        await advance(c, clock, utc(2026, 1, 5, 10, 5, 1), wf)
        clock.set(utc(2026, 1, 5, 10, 6))
        c.bus.handle(m.DeactivateWorkflow(workspace_id=ws, workflow_id=wf))
        clock.set(utc(2026, 1, 5, 10, 21))  # 10:10, 10:15, 10:20 pass while deactivated
        await eventually(lambda: active(c, wf, False), timeout=10)
        assert await runs(c, wf) == iso(utc(2026, 1, 5, 10, 5))

        c.bus.handle(m.ActivateWorkflow(workspace_id=ws, workflow_id=wf))
        await eventually(lambda: active(c, wf, True), timeout=10)
        row = await schedule_row(c, wf)
        assert row is not None and row["next_due"] == utc(2026, 1, 5, 10, 25)
        await advance(c, clock, utc(2026, 1, 5, 10, 25, 1), wf)
        assert await runs(c, wf) == iso(utc(2026, 1, 5, 10, 5), utc(2026, 1, 5, 10, 25))

        clock.set(utc(2026, 1, 5, 10, 26))
        c.bus.handle(m.ArchiveWorkflow(workspace_id=ws, workflow_id=wf))
        await eventually(lambda: active(c, wf, False), timeout=10)
        await advance(c, clock, utc(2026, 1, 5, 10, 40), wf)
        assert await runs(c, wf) == iso(utc(2026, 1, 5, 10, 5), utc(2026, 1, 5, 10, 25))


async def test_a_schedule_runs_at_local_time_across_daylight_saving(
    fresh_settings: Settings, clock: FakeClock
) -> None:
    clock.set(utc(2026, 3, 6, 12))  # New York switches to EDT on 2026-03-08
    async with roles(fresh_settings, "relay") as r, scheduler(r.container, clock):
        c = r.container
        _, wf = schedule_workflow(c, "0 9 * * *", timezone="America/New_York")
        await eventually(lambda: active(c, wf, True), timeout=10)
        expected = [utc(2026, 3, 6, 14), utc(2026, 3, 7, 14), utc(2026, 3, 8, 13)]
        for due in expected:
            await advance(c, clock, due + timedelta(seconds=5), wf)
        assert await runs(c, wf) == iso(*expected)
