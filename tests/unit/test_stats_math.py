"""The pure parts of `projections.stats`: duration bins (within 2.5 %), histograms and
nearest-rank percentiles, failure rates, UTC buckets and the split of a window into whole days,
whole hours and partial hours. No I/O."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from projections import stats
from projections.query_language import parse
from projections.stats import BOUNDS, Histogram, Tally, bin_value, duration_bin

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


# ---------------------------------------------------------------- bins


def test_bounds_follow_the_recurrence_of_migration_013() -> None:
    assert BOUNDS[:22] == tuple(range(22))
    for lo, hi in zip(BOUNDS, BOUNDS[1:], strict=False):
        assert hi == lo + max(1, lo // 20)
    assert BOUNDS[-2] < 10**12 <= BOUNDS[-1]
    assert len(BOUNDS) < 2**15  # bin numbers fit the int the SQL side uses


def test_each_bin_stands_for_its_durations_within_2_5_percent() -> None:
    for b, (lo, nxt) in enumerate(zip(BOUNDS, BOUNDS[1:], strict=False)):
        value = bin_value(b)
        assert lo <= value < nxt
        for d in (lo, nxt - 1):  # the extremes of the bin
            assert abs(value - d) <= stats.RELATIVE_ERROR * d, (b, d)
        if nxt - lo == 1:
            assert value == lo  # exact below 20 ms


def test_a_duration_falls_in_the_bin_that_holds_it() -> None:
    rng = random.Random(4)
    durations = [*range(0, 5000), *(rng.randrange(0, 10**13) for _ in range(5000))]
    for d in durations:
        b = duration_bin(d)
        assert BOUNDS[b] <= d, d
        assert b + 1 == len(BOUNDS) or d < BOUNDS[b + 1], d
    assert duration_bin(-30) == 0
    assert bin_value(len(BOUNDS) - 1) == BOUNDS[-1]  # the open last bin


# ---------------------------------------------------------------- histograms


def histogram_of(durations: list[int]) -> Histogram:
    h = Histogram()
    for d in durations:
        h.add(duration_bin(d), [1])
    return h


def nearest_rank(values: list[int], p: int) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


@pytest.mark.parametrize("seed", range(20))
def test_percentiles_are_nearest_rank_within_2_5_percent(seed: int) -> None:
    rng = random.Random(seed)
    scale = rng.choice([10, 1000, 10**6])
    durations = [int(rng.lognormvariate(0, 2) * scale) for _ in range(rng.randrange(1, 400))]
    h = histogram_of(durations)
    for p in (1, 50, 95, 99, 100):
        exact = nearest_rank(durations, p)
        found = h.percentiles((p,))[f"p{p}"]
        assert found is not None
        assert abs(found - exact) <= stats.RELATIVE_ERROR * exact, (p, exact, found)


def test_percentiles_of_few_values() -> None:
    assert Histogram().percentiles((50, 99)) == {"p50": None, "p99": None}
    assert histogram_of([7]).percentiles((99,)) == {"p99": 7}
    # Nearest rank: p50 of two values is the first, p51 the second.
    assert histogram_of([3, 15]).percentiles((50, 51)) == {"p50": 3, "p51": 15}
    assert histogram_of([0, 0, 0, 12]).percentiles((75, 76)) == {"p75": 0, "p76": 12}


def test_percentile_bins_are_the_first_reaching_the_rank() -> None:
    h = Histogram(10, [2, 0, 1, 7])  # 10 durations: ranks 5, 10, 10 for p50, p95, p99
    assert h.percentile_bins((50, 95, 99)) == [13, 13, 13]
    assert h.percentile_bins((20, 21, 31)) == [10, 12, 13]  # ranks 2, 3 and 4
    assert Histogram().percentile_bins((50,)) is None
    assert stats.named((50, 95), [13, 200]) == {"p50": bin_value(13), "p95": bin_value(200)}
    assert stats.named((50,), None) == {"p50": None}


def test_stored_percentile_bins_stand_in_for_the_histogram() -> None:
    t = Tally()
    t.add("completed", 3, 40, [1, 1, 1])
    computed = t.summary(stats.STORED_PERCENTILES)
    t.stored = t.durations.percentile_bins(stats.STORED_PERCENTILES)
    t.durations = Histogram()
    assert t.summary(stats.STORED_PERCENTILES) == computed


def test_histograms_add_up_in_any_order() -> None:
    parts = [(40, [1, 0, 2]), (3, [5]), (41, [1, 1, 1, 1]), (200, [9]), (10, [0, 3])]
    expected = Histogram()
    for lo, counts in parts:
        expected.add(lo, counts)
    for seed in range(10):
        shuffled = parts[:]
        random.Random(seed).shuffle(shuffled)
        h = Histogram()
        for lo, counts in shuffled:
            h.add(lo, counts)
        assert h == expected
    assert expected.lo == 3 and len(expected.counts) == 198
    assert sum(expected.counts) == 1 + 2 + 5 + 4 + 9 + 3
    assert expected.counts[42 - 3] == 3  # 2 from the first part, 1 from the third


# ---------------------------------------------------------------- tallies


def test_failure_rate_counts_failed_and_timed_out_among_the_closed() -> None:
    t = Tally()
    assert t.failure_rate() is None
    t.add("running", 4, None, None)
    assert t.failure_rate() is None  # none closed
    t.add("completed", 5, 100, [5])
    t.add("canceled", 1, 100, [1])
    t.add("failed", 1, 30, [1])
    t.add("timed_out", 1, 400, [1])
    assert t.failure_rate() == 2 / 8
    summary = t.summary((50, 95))
    assert summary["total"] == 12
    assert summary["by_status"] == {
        "running": 4,
        "completed": 5,
        "failed": 1,
        "canceled": 1,
        "timed_out": 1,
        "queued": 0,
    }
    assert summary["duration_ms"] == {"p50": bin_value(100), "p95": bin_value(400)}


def test_an_empty_tally_names_every_status() -> None:
    assert Tally().summary((50, 95, 99)) == {
        "total": 0,
        "by_status": {
            "running": 0,
            "completed": 0,
            "failed": 0,
            "canceled": 0,
            "timed_out": 0,
            "queued": 0,
        },
        "failure_rate": None,
        "duration_ms": {"p50": None, "p95": None, "p99": None},
    }


# ---------------------------------------------------------------- buckets


def test_buckets_are_aligned_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 2, 0, 30, tzinfo=paris)  # 23:30 UTC the day before
    assert stats.align(at, DAY) == datetime(2026, 11, 1, tzinfo=UTC)
    assert stats.align(T0 + 7 * MINUTE + 5 * SECOND, 5 * MINUTE) == T0 + 5 * MINUTE
    assert stats.align(T0, HOUR) == T0
    assert stats.align_up(T0, HOUR) == T0
    assert stats.align_up(T0 + timedelta(microseconds=1), HOUR) == T0 + HOUR


@pytest.mark.parametrize(
    ("start", "end", "interval", "starts"),
    [
        (T0, T0 + HOUR, "1h", [T0]),
        (T0 + MINUTE, T0 + HOUR + timedelta(microseconds=1), "1h", [T0, T0 + HOUR]),
        (T0 - 90 * SECOND, T0 + 2 * MINUTE, "1m", [T0 + i * MINUTE for i in (-2, -1, 0, 1)]),
        (T0 + 2 * MINUTE, T0 + 11 * MINUTE, "5m", [T0, T0 + 5 * MINUTE, T0 + 10 * MINUTE]),
        (T0, T0 + DAY, "1d", [T0 - 8 * HOUR, T0 + 16 * HOUR]),
    ],
)  # fmt: skip
def test_bucket_starts(
    start: datetime, end: datetime, interval: str, starts: list[datetime]
) -> None:
    assert stats.bucket_starts(start, end, interval) == starts
    assert stats.bucket_count(start, end, stats.INTERVALS[interval]) == len(starts)


# ---------------------------------------------------------------- windows


def spans(window: stats.Window) -> list[tuple[datetime, datetime]]:
    return sorted([*window.days, *window.hours, *window.exact])


@pytest.mark.parametrize(
    ("start", "end", "days", "hours", "exact"),
    [
        (T0 + MINUTE, T0 + 50 * MINUTE, [], [], [(T0 + MINUTE, T0 + 50 * MINUTE)]),
        (T0, T0 + HOUR, [], [(T0, T0 + HOUR)], []),
        (T0 + MINUTE, T0 + 2 * HOUR + MINUTE, [], [(T0 + HOUR, T0 + 2 * HOUR)],
         [(T0 + MINUTE, T0 + HOUR), (T0 + 2 * HOUR, T0 + 2 * HOUR + MINUTE)]),
        (T0 - 8 * HOUR, T0 + 16 * HOUR, [(T0 - 8 * HOUR, T0 + 16 * HOUR)], [], []),
        (T0 + 30 * MINUTE, T0 + 2 * DAY, [(T0 + 16 * HOUR, T0 + 40 * HOUR)],
         [(T0 + HOUR, T0 + 16 * HOUR), (T0 + 40 * HOUR, T0 + 48 * HOUR)],
         [(T0 + 30 * MINUTE, T0 + HOUR)]),
    ],
)  # fmt: skip
def test_a_window_in_days_hours_and_partial_hours(
    start: datetime,
    end: datetime,
    days: list[tuple[datetime, datetime]],
    hours: list[tuple[datetime, datetime]],
    exact: list[tuple[datetime, datetime]],
) -> None:
    window = stats.split_window(start, end)
    assert (list(window.days), list(window.hours), list(window.exact)) == (days, hours, exact)


@pytest.mark.parametrize("seed", range(50))
def test_a_window_is_covered_once(seed: int) -> None:
    rng = random.Random(seed)
    start = T0 + timedelta(seconds=rng.randrange(-(10**6), 10**6))
    end = start + timedelta(seconds=rng.randrange(1, 10**7))
    window = stats.split_window(start, end)
    parts = spans(window)
    assert parts[0][0] == start and parts[-1][1] == end
    for (_, b), (c, _) in zip(parts, parts[1:], strict=False):
        assert b == c  # contiguous, no overlap
    for a, b in window.days:
        assert stats.align(a, DAY) == a and stats.align(b, DAY) == b
    for a, b in window.hours:
        assert stats.align(a, HOUR) == a and stats.align(b, HOUR) == b
    assert all(b - a < HOUR for a, b in window.exact) and len(window.exact) <= 2


# ---------------------------------------------------------------- filters


def test_the_fields_a_filter_names() -> None:
    q = "NOT (status = 'failed' OR (workflow_id IS NULL AND attr.region = 'eu')) ORDER BY closed_at"
    assert stats.filter_fields(parse(q)) == {"status", "workflow_id", "attr.region"}
    assert stats.filter_fields(parse("ORDER BY closed_at")) == set()
