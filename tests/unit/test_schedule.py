"""Cron schedules: due times in a time zone (with daylight-saving changes) and catch-up plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.schedule import MAX_CATCH_UP, ON_TIME, Schedule, iso_utc, plan


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_due_time_is_strictly_after_the_given_time() -> None:
    every5 = Schedule("*/5 * * * *")
    assert every5.next_after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 5)
    assert every5.next_after(utc(2026, 1, 1, 10, 2, 30)) == utc(2026, 1, 1, 10, 5)


def test_local_time_follows_daylight_saving_in_new_york() -> None:
    nine = Schedule("0 9 * * *", "America/New_York")
    assert nine.next_after(utc(2026, 1, 15)) == utc(2026, 1, 15, 14)  # EST, UTC-5
    assert nine.next_after(utc(2026, 7, 15)) == utc(2026, 7, 15, 13)  # EDT, UTC-4
    # 2026-03-08 is the spring-forward day: 09:00 is already EDT.
    days = nine.between(utc(2026, 3, 7), utc(2026, 3, 9, 23))
    assert days == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]


def test_a_local_time_the_clock_skips_runs_once_shifted_by_the_gap() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    half_past_two = Schedule("30 2 * * *", "Europe/Berlin")
    days = half_past_two.between(utc(2026, 3, 28), utc(2026, 3, 30, 12))
    assert days == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]


def test_frequent_schedule_across_spring_forward_has_no_duplicates() -> None:
    every30 = Schedule("*/30 * * * *", "Europe/Berlin")
    dues = every30.between(utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))
    # 01:00, 01:30 CET; the skipped 02:00 and 02:30 map to 03:00 and 03:30 CEST, due anyway; 04:00
    assert dues == [
        utc(2026, 3, 29, 0, 0),
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 2, 0),
    ]


def test_a_local_time_the_clock_shows_twice_runs_once_at_its_first_occurrence() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
    half_past_two = Schedule("30 2 * * *", "Europe/Berlin")
    days = half_past_two.between(utc(2026, 10, 24), utc(2026, 10, 26, 12))
    assert days == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    every30 = Schedule("*/30 * * * *", "Europe/Berlin")
    dues = every30.between(utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))
    # 01:30 CEST, 02:00 CEST, 02:30 CEST, (repeated hour: nothing), 03:00 CET, 03:30 CET
    assert dues == [
        utc(2026, 10, 24, 23, 30),
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 2, 0),
        utc(2026, 10, 25, 2, 30),
    ]
    # Starting inside the repeated hour gives the next due time after it, not one before.
    assert every30.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 2, 0)


def test_an_expression_that_never_matches_has_no_next_due_time() -> None:
    assert Schedule("0 0 30 2 *").next_after(utc(2026, 1, 1)) is None


def test_on_time_due_time_runs_under_every_policy() -> None:
    now = utc(2026, 1, 1, 10, 5, 2)
    for policy in ("latest", "all", "none"):
        result = plan(Schedule("*/5 * * * *", catch_up=policy), utc(2026, 1, 1, 10, 5), now)
        assert result.run == (utc(2026, 1, 1, 10, 5),)
        assert result.skipped == 0
        assert result.next_due == utc(2026, 1, 1, 10, 10)


def test_nothing_runs_before_the_next_due_time() -> None:
    result = plan(Schedule("*/5 * * * *"), utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 10, 4))
    assert result.run == () and result.next_due == utc(2026, 1, 1, 10, 5)


@pytest.mark.parametrize(
    ("policy", "runs"),
    [
        ("latest", [utc(2026, 1, 1, 10, 20)]),
        ("all", [utc(2026, 1, 1, 10, m) for m in (5, 10, 15, 20)]),
        ("none", []),
    ],
)
def test_missed_due_times_follow_the_catch_up_policy(policy: str, runs: list[datetime]) -> None:
    schedule = Schedule("*/5 * * * *", catch_up=policy)  # type: ignore[arg-type]
    now = utc(2026, 1, 1, 10, 23)  # down from before 10:05 until 10:23
    result = plan(schedule, utc(2026, 1, 1, 10, 5), now)
    assert list(result.run) == runs
    assert result.skipped == 4 - len(runs)
    assert result.next_due == utc(2026, 1, 1, 10, 25)


def test_none_runs_the_latest_missed_due_time_only_while_it_is_on_time() -> None:
    schedule = Schedule("*/5 * * * *", catch_up="none")
    late = utc(2026, 1, 1, 10, 20) + ON_TIME
    assert plan(schedule, utc(2026, 1, 1, 10, 5), late).run == (utc(2026, 1, 1, 10, 20),)
    assert plan(schedule, utc(2026, 1, 1, 10, 5), late + timedelta(seconds=1)).run == ()


def test_all_is_bounded_to_the_latest_missed_due_times() -> None:
    schedule = Schedule("* * * * *", catch_up="all")
    start, now = utc(2026, 1, 1), utc(2026, 1, 2, 0, 0, 30)  # 1,441 due times missed
    result = plan(schedule, start, now)
    assert len(result.run) == MAX_CATCH_UP
    assert result.run[-1] == utc(2026, 1, 2)
    assert result.run[0] == utc(2026, 1, 2) - timedelta(minutes=MAX_CATCH_UP - 1)
    assert result.skipped == 1441 - MAX_CATCH_UP


def test_latest_after_a_long_outage_of_a_sparse_schedule() -> None:
    yearly = Schedule("0 12 1 6 *", "Europe/Berlin")
    result = plan(yearly, utc(2020, 6, 1, 10), utc(2026, 1, 1))
    assert result.run == (utc(2025, 6, 1, 10),)
    assert result.skipped == 5
    assert result.next_due == utc(2026, 6, 1, 10)


def test_input_names_the_due_time_in_utc_and_local_time() -> None:
    schedule = Schedule("0 9 * * *", "America/New_York")
    assert schedule.input_for(utc(2026, 7, 15, 13)) == {
        "scheduled_at": "2026-07-15T13:00:00Z",
        "timezone": "America/New_York",
        "local_time": "2026-07-15T09:00:00-04:00",
    }
    assert iso_utc(utc(2026, 1, 1)) == "2026-01-01T00:00:00Z"


def test_schedule_of_a_trigger() -> None:
    assert Schedule.of_trigger({"type": "manual"}) is None
    assert Schedule.of_trigger({"type": "schedule", "cron": "0 * * * *"}) == Schedule("0 * * * *")
    trigger = {"type": "schedule", "cron": "0 * * * *", "timezone": "Asia/Tokyo", "catch_up": "all"}
    assert Schedule.of_trigger(trigger) == Schedule("0 * * * *", "Asia/Tokyo", "all")
