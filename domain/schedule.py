"""Cron schedules: when a schedule trigger is due, and which missed due times run under its
catch-up policy.

Pure: no clock, no I/O; every time comes in as an argument (timezone-aware) and goes out in UTC.
Imported by `engine.schedules` and the tests.

The cron fields are local wall-clock times in the schedule's IANA time zone. Around a
daylight-saving change:
- a local time the clock skips (spring forward: 02:30 in Europe/Berlin on the last Sunday of
  March) runs as if the clock had not changed yet, i.e. shifted by the gap (03:30 CEST), once;
- a local time the clock shows twice (fall back: 02:30 on the last Sunday of October) runs once,
  at its first occurrence (02:30 CEST); the repeated hour has no due times of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

CatchUp = Literal["latest", "all", "none"]

# `all` starts at most this many missed due times (the latest ones); older ones are skipped.
MAX_CATCH_UP = 100
# A due time reached more than this late counts as missed (matters for `none`).
ON_TIME = timedelta(seconds=60)
# Missed due times counted (for the skipped metric) per catch-up, at most.
MAX_COUNTED = 10_000

_TICK = timedelta(microseconds=1)
_FIRST_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule whose next due time has come."""

    run: tuple[datetime, ...]  # due times to start now, oldest first
    skipped: int  # missed due times the catch-up policy leaves out (counted up to MAX_COUNTED)
    next_due: datetime | None  # the first due time after now; None: the expression never matches


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = "latest"

    @classmethod
    def of_trigger(cls, trigger: dict[str, Any]) -> Schedule | None:
        """The schedule of a (validated) definition's trigger, None for other trigger types."""
        if trigger.get("type") != "schedule" or not trigger.get("cron"):
            return None
        return cls(
            trigger["cron"], trigger.get("timezone", "UTC"), trigger.get("catch_up", "latest")
        )

    def due_times(self, after: datetime) -> Iterator[datetime]:
        """The due times strictly after `after`, in UTC, increasing (endless unless the
        expression stops matching)."""
        zone = ZoneInfo(self.timezone)
        walls = croniter(self.cron, after.astimezone(zone).replace(tzinfo=None))
        last = after
        while True:
            try:
                wall = walls.get_next(datetime)
            except CroniterBadDateError:  # e.g. "0 0 30 2 *": valid, but never matches
                return
            # fold=0: a skipped wall time maps past the gap, a repeated one to its first instant
            # (the second pass then maps before `last` and is dropped).
            due = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if due > last:
                last = due
                yield due

    def next_after(self, t: datetime) -> datetime | None:
        """The first due time strictly after `t`."""
        return next(self.due_times(t), None)

    def between(self, first: datetime, last: datetime, limit: int | None = None) -> list[datetime]:
        """Due times d with first <= d <= last, oldest first (at most `limit`, the oldest)."""
        within = takewhile(lambda due: due <= last, self.due_times(first - _TICK))
        return list(islice(within, limit))

    def latest(self, first: datetime, last: datetime, count: int) -> list[datetime]:
        """The latest `count` due times d with first <= d <= last, oldest first. Searches
        backwards from `last` in growing windows, so a long gap costs little."""
        found: list[datetime] = []
        window, end = _FIRST_WINDOW, last
        while len(found) < count and end >= first:
            start = max(first, end - window)
            found = [d for d in self.between(start, end) if d < end or end == last] + found
            end, window = start, window * 2
            if start == first:
                break
        return found[-count:]

    def input_for(self, due: datetime) -> dict[str, str]:
        """The execution input of the run for due time `due` (a function of `due` alone, so a
        repeated start of the same due time carries the same input)."""
        return {
            "scheduled_at": iso_utc(due),
            "timezone": self.timezone,
            "local_time": due.astimezone(ZoneInfo(self.timezone)).isoformat(),
        }


def plan(schedule: Schedule, next_due: datetime, now: datetime) -> Plan:
    """Which due times from `next_due` up to `now` to run under the schedule's catch-up policy:
    `latest` the last one, `all` each (the latest MAX_CATCH_UP), `none` the last one only if it
    is on time (at most ON_TIME ago), else nothing."""
    if next_due > now:
        return Plan((), 0, next_due)
    wanted = MAX_CATCH_UP if schedule.catch_up == "all" else 1
    run = schedule.latest(next_due, now, wanted)
    if schedule.catch_up == "none":
        run = [due for due in run if now - due <= ON_TIME]
    total = max(len(schedule.between(next_due, now, MAX_COUNTED)), len(run))
    return Plan(tuple(run), total - len(run), schedule.next_after(now))


def iso_utc(t: datetime) -> str:
    """`2026-03-29T01:30:00Z`: the form used in idempotency keys and inputs."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
