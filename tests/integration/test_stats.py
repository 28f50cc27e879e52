"""Counts and statistics of executions on the real PostgreSQL (issue 14, item 4): executions of
two workspaces projected with known times, statuses and durations through
`projections.visibility.project`, then counted and bucketed through `projections.stats` —
exactly, from the rollups and from the executions (the fallback), the two agreeing; another
workspace never counted; the rollup path planned over the rollups only. The rollups equal what
the rows say after any batching, random changes and a rebuild, and migration 013 fills them for
rows projected before it. Over HTTP: `tests/integration/test_stats_http.py`.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from domain.definition import parse_definition
from domain.execution import Execution, timer_id
from domain.statuses import TimerKind
from domain.workflow import Workflow
from gateways.bootstrap import Container, bootstrap
from infra.schema import MIGRATIONS, create_database, drop_database
from infra.settings import Settings
from projections import stats
from projections.query_language import parse
from projections.visibility import project, reset_read_models

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
HTTP_500 = {"type": "http_status", "message": "HTTP 500"}
TIMEOUT_S = 60


def _definition(name: str) -> dict[str, Any]:
    """One HTTP call (its failure fails the execution), at most TIMEOUT_S seconds in all."""
    raw = {
        "name": name,
        "settings": {"timeout_s": TIMEOUT_S},
        "nodes": [{"id": "call", "type": "http_request", "config": {"url": "http://h"}}],
    }
    return parse_definition(raw).to_json()


@dataclass
class Run:
    """One projected execution, as the statistics should see it."""

    workflow: str
    workflow_id: UUID
    status: str
    started_at: datetime
    duration_ms: int | None
    trigger: str
    region: str | None


@dataclass
class Scenario:
    """A workspace's workflows and executions, built from domain commands at chosen times."""

    id: UUID = field(default_factory=uuid4)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    archived: set[str] = field(default_factory=set)
    executions: list[Execution] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def workflow(self, name: str, archived: bool = False) -> None:
        wf = Workflow.create(uuid4(), str(self.id), _definition(name), "tester", T0 - 2 * DAY)
        if archived:
            wf.archive(T0 - DAY)
            self.archived.add(name)
        self.workflows[name] = wf

    def run(
        self,
        name: str,
        start: timedelta,
        outcome: str,
        ms: int = 0,
        trigger: str = "manual",
        region: str | None = None,
    ) -> None:
        wf = self.workflows[name]
        started = T0 + start
        closed = started + timedelta(milliseconds=ms)
        ex = Execution.start(
            uuid4(),
            str(self.id),
            str(wf.id),
            1,
            _definition(name),
            {},
            started,
            trigger=trigger,
            search_attributes={"region": region} if region else None,
        )
        if outcome == "completed":
            ex.complete_node("call", 1, {"ok": True}, closed)
        elif outcome == "failed":
            ex.fail_node("call", 1, HTTP_500, closed)
        elif outcome == "canceled":
            ex.cancel("enough", closed)
        elif outcome == "timed_out":
            closed = started + timedelta(seconds=TIMEOUT_S)
            ex.fire_timer(timer_id(ex.id, TimerKind.EXECUTION_TIMEOUT), closed)
            ms = TIMEOUT_S * 1000
        self.executions.append(ex)
        duration = None if outcome == "running" else ms
        self.runs.append(Run(name, wf.id, outcome, started, duration, trigger, region))

    def events(self) -> list[Any]:
        aggregates = [*self.workflows.values(), *self.executions]
        return [e for a in aggregates for e in a.collect_events()]


SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def workspace_a() -> Scenario:
    a = Scenario()
    for name in ("alpha", "beta", "gamma"):  # gamma never runs
        a.workflow(name)
    a.workflow("old", archived=True)
    a.run("alpha", timedelta(0), "completed", 1000, region="eu")
    a.run("alpha", timedelta(seconds=30), "failed", 5000, trigger="webhook", region="eu")
    a.run("alpha", timedelta(seconds=61), "completed", 15)
    a.run("beta", timedelta(seconds=70), "running")
    a.run("beta", timedelta(seconds=125), "canceled", 2000)
    a.run("beta", HOUR + timedelta(seconds=10), "timed_out", trigger="schedule")
    a.run("alpha", HOUR + 5 * MINUTE, "completed", 250, region="eu")
    a.run("alpha", DAY, "failed", 123_456)
    a.run("old", timedelta(seconds=20), "completed", 40)
    a.run("alpha", -HOUR, "completed", 7)
    a.run("beta", 2 * DAY + 3 * HOUR, "completed", 0)
    return a


def workspace_b() -> Scenario:
    """Another workspace, with a workflow of the same name, at the same times."""
    b = Scenario()
    b.workflow("alpha")
    b.run("alpha", timedelta(0), "failed", 999)
    b.run("alpha", timedelta(seconds=61), "completed", 3)
    return b


@dataclass
class Projected:
    a: Scenario
    b: Scenario
    container: Container


async def project_in_batches(c: Container, events: list[Any], size: int) -> None:
    """Each `size` events in a transaction of their own (a start and its close may then be
    in different transactions: the running row is added, then moved)."""
    async with c.pool.connection() as conn:
        for i in range(0, len(events), size):
            async with conn.transaction():
                await project(conn, [(None, e) for e in events[i : i + size]])


@pytest.fixture(scope="module")
async def projected(settings: Settings) -> AsyncIterator[Projected]:
    a, b = workspace_a(), workspace_b()
    c = await bootstrap(settings)
    try:
        await project_in_batches(c, a.events() + b.events(), 5)
        yield Projected(a, b, c)
    finally:
        await c.close()


# ---------------------------------------------------------------- the model


def tally(runs: list[Run]) -> stats.Tally:
    """What the statistics of `runs` are (durations binned as the rollups bin them)."""
    t = stats.Tally()
    for r in runs:
        has = r.duration_ms is not None
        bin_ = stats.duration_bin(r.duration_ms) if r.duration_ms is not None else None
        t.add(r.status, 1, bin_, [1] if has else None)
    return t


def expected_buckets(
    runs: list[Run], start: datetime, end: datetime, interval: str
) -> list[dict[str, Any]]:
    step = stats.INTERVALS[interval]
    out = []
    for at in stats.bucket_starts(start, end, interval):
        inside = [r for r in runs if at <= r.started_at < at + step]
        out.append({"start": at.isoformat(), **tally(inside).summary((50, 95, 99))})
    return out


async def read(p: Projected, query: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    async with p.container.pool.connection() as conn:
        result = await query(conn, *args, **kwargs)
        await conn.commit()
    return result


async def count(p: Projected, q: str = "", group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    result: dict[str, Any] = await read(
        p, stats.count_executions, p.a.id, q=parse(q), group_by=group_by
    )
    return result


def expected_groups(runs: list[Run], *keys: str) -> list[dict[str, Any]]:
    def value(r: Run, key: str) -> Any:
        return {"status": r.status, "workflow_id": str(r.workflow_id), "trigger": r.trigger}[key]

    counted = Counter(tuple(value(r, k) for k in keys) for r in runs)
    ordered = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"values": dict(zip(keys, k, strict=True)), "count": n} for k, n in ordered]


# A condition true of every execution that sends a query to the fallback (started_at is not a
# rollup column).
EVERY = "started_at > '2000-01-01T00:00:00Z'"


# ---------------------------------------------------------------- counts


async def test_count_of_the_whole_workspace_and_per_group(projected: Projected) -> None:
    p, runs = projected, projected.a.runs
    assert (await count(p))["count"] == len(runs) == 11
    assert (await count(p))["groups"] == []
    by_status = await count(p, group_by=("status",))
    assert by_status["count"] == len(runs)
    assert by_status["groups"] == expected_groups(runs, "status")
    assert by_status["groups"][0] == {"values": {"status": "completed"}, "count": 6}
    by_both = await count(p, group_by=("workflow_id", "status"))
    assert by_both["groups"] == expected_groups(runs, "workflow_id", "status")
    assert (await count(p, group_by=("trigger",)))["groups"] == expected_groups(runs, "trigger")


@pytest.mark.parametrize(
    ("q", "keep"),
    [
        ("status = 'failed'", lambda r: r.status == "failed"),
        ("status IN ('failed', 'timed_out')", lambda r: r.status in ("failed", "timed_out")),
        ("NOT status = 'completed'", lambda r: r.status != "completed"),
        ("status IS NULL", lambda r: False),
        ("workflow_name = 'alpha'", lambda r: r.workflow == "alpha"),
        ("duration_ms >= 2000", lambda r: (r.duration_ms or 0) >= 2000),
        ("closed_at IS NULL", lambda r: r.duration_ms is None),
        ("error_code = 'http_status'", lambda r: r.status == "failed"),
        ("trigger = 'schedule' OR status = 'canceled'", lambda r: r.status in ("timed_out", "canceled")),  # noqa: E501
        ("attr.region = 'eu'", lambda r: r.region == "eu"),
        ("NOT attr.region = 'eu'", lambda r: False),  # no other region: neither way
    ],
)  # fmt: skip
async def test_count_of_a_filter(projected: Projected, q: str, keep: Callable[[Run], bool]) -> None:
    runs = [r for r in projected.a.runs if keep(r)]
    answer = await count(projected, q, ("status",))
    assert answer["count"] == len(runs), q
    assert answer["groups"] == expected_groups(runs, "status"), q


async def test_count_of_workflows_by_id(projected: Projected) -> None:
    p = projected
    alpha, beta = (p.a.workflows[n].id for n in ("alpha", "beta"))
    q = f"workflow_id = '{alpha}' AND status != 'completed'"
    assert (await count(p, q))["count"] == 2
    q = f"NOT workflow_id IN ('{alpha}', '{beta}')"
    assert (await count(p, q))["count"] == 1  # the archived workflow's one execution
    # Grouping by a column the rollups do not have answers from the executions.
    grouped = await count(p, f"workflow_id = '{beta}'", ("trigger", "status"))
    beta_runs = [r for r in p.a.runs if r.workflow == "beta"]
    assert grouped["groups"] == expected_groups(beta_runs, "trigger", "status")


@pytest.mark.parametrize(
    "q", ["", "status = 'completed'", "status != 'running'", "workflow_id = '{alpha}'"]
)
@pytest.mark.parametrize("group_by", [(), ("status",), ("workflow_id",), ("status", "workflow_id")])
async def test_the_rollups_and_the_executions_count_alike(
    projected: Projected, q: str, group_by: tuple[str, ...]
) -> None:
    q = q.format(alpha=projected.a.workflows["alpha"].id)
    rolled = await count(projected, q, group_by)
    fallback = await count(projected, f"{q} AND {EVERY}" if q else EVERY, group_by)
    assert rolled == fallback


async def test_another_workspace_is_never_counted(projected: Projected) -> None:
    p = projected
    mine = await read(p, stats.count_executions, p.b.id, group_by=("status",))
    assert mine["groups"] == expected_groups(p.b.runs, "status")
    alpha_b = p.b.workflows["alpha"].id
    # Its workflow id named in this workspace's filter matches nothing here.
    assert (await count(p, f"workflow_id = '{alpha_b}'"))["count"] == 0
    assert (await count(p, f"workflow_id = '{alpha_b}' AND {EVERY}"))["count"] == 0
    nobody = await read(p, stats.count_executions, uuid4(), group_by=("status",))
    assert (nobody["count"], nobody["groups"]) == (0, [])
    window = (T0 - DAY, T0 + 3 * DAY)
    other = await read(p, stats.execution_stats, p.b.id, *window, "1d")
    assert other["buckets"] == expected_buckets(p.b.runs, *window, "1d")


# ---------------------------------------------------------------- stats over time


@pytest.mark.parametrize(
    ("interval", "start", "end"),
    [
        ("1m", T0 - 2 * MINUTE, T0 + 5 * MINUTE),
        ("5m", T0 - HOUR - 7 * MINUTE, T0 + 2 * HOUR + 1 * MINUTE),
        ("1h", T0 - 2 * HOUR + 30 * MINUTE, T0 + DAY + HOUR),
        ("1d", T0 - 3 * DAY, T0 + 3 * DAY + 1 * MINUTE),
    ],
)
async def test_stats_per_bucket(
    projected: Projected, interval: str, start: datetime, end: datetime
) -> None:
    p = projected
    answer = await read(p, stats.execution_stats, p.a.id, start, end, interval)
    assert answer["interval"] == interval
    assert answer["buckets"] == expected_buckets(p.a.runs, start, end, interval)
    fallback = await read(p, stats.execution_stats, p.a.id, start, end, interval, q=parse(EVERY))
    assert fallback["buckets"] == answer["buckets"]


async def test_a_bucket_in_numbers(projected: Projected) -> None:
    """08:00–09:00: completed 1000, 15 and 40 ms, failed 5000 ms, canceled 2000 ms, one
    running; a bucket cut by from/to still counts all of it; empty buckets are zeros."""
    p = projected
    answer = await read(p, stats.execution_stats, p.a.id, T0 + 30 * MINUTE, T0 + 90 * MINUTE, "1h")
    eight, nine = answer["buckets"]
    assert eight["start"] == "2026-11-02T08:00:00+00:00"
    assert eight["total"] == 6
    assert eight["by_status"] == {
        "running": 1,
        "completed": 3,
        "failed": 1,
        "canceled": 1,
        "timed_out": 0,
        "queued": 0,
    }
    assert eight["failure_rate"] == 1 / 5
    # Sorted durations 15, 40, 1000, 2000, 5000: nearest ranks 3, 5 and 5.
    p50, p95, p99 = (eight["duration_ms"][k] for k in ("p50", "p95", "p99"))
    assert abs(p50 - 1000) <= 0.025 * 1000
    assert abs(p95 - 5000) <= 0.025 * 5000
    assert p95 == p99 == stats.bin_value(stats.duration_bin(5000))
    assert nine["by_status"]["timed_out"] == 1 and nine["failure_rate"] == 1 / 2
    empty = await read(p, stats.execution_stats, p.a.id, T0 + 5 * HOUR, T0 + 6 * HOUR, "1h")
    assert empty["buckets"] == [
        {
            "start": "2026-11-02T13:00:00+00:00",
            "total": 0,
            "by_status": dict.fromkeys(eight["by_status"], 0),
            "failure_rate": None,
            "duration_ms": {"p50": None, "p95": None, "p99": None},
        }
    ]


@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "1d"])
@pytest.mark.parametrize(
    ("q", "keep"),
    [
        ("status IN ('completed', 'failed')", lambda r: r.status in ("completed", "failed")),
        ("NOT status = 'running'", lambda r: r.status != "running"),
        ("workflow_id = '{beta}'", lambda r: r.workflow == "beta"),
        ("workflow_id = '{alpha}' AND NOT status = 'failed'", lambda r: r.workflow == "alpha" and r.status != "failed"),  # noqa: E501
        ("duration_ms < 1000", lambda r: r.duration_ms is not None and r.duration_ms < 1000),
        ("attr.region = 'eu' AND status = 'completed'", lambda r: r.region == "eu" and r.status == "completed"),  # noqa: E501
    ],
)  # fmt: skip
async def test_stats_of_a_filter(
    projected: Projected, interval: str, q: str, keep: Callable[[Run], bool]
) -> None:
    p = projected
    q = q.format(**{name: wf.id for name, wf in p.a.workflows.items()})
    start, end = T0 - 2 * HOUR, T0 + 2 * HOUR
    if interval == "1d":
        start, end = T0 - 3 * DAY, T0 + 3 * DAY
    answer = await read(p, stats.execution_stats, p.a.id, start, end, interval, q=parse(q))
    runs = [r for r in p.a.runs if keep(r)]
    assert answer["buckets"] == expected_buckets(runs, start, end, interval), q


# ---------------------------------------------------------------- per workflow


def expected_items(a: Scenario, start: datetime, end: datetime) -> list[dict[str, Any]]:
    items = []
    for name in sorted(set(a.workflows) - a.archived):
        runs = [r for r in a.runs if r.workflow == name]
        inside = [r for r in runs if start <= r.started_at < end]
        last = max((r.started_at for r in runs), default=None)
        items.append(
            {
                "workflow_id": str(a.workflows[name].id),
                "name": name,
                **tally(inside).summary((50, 95)),
                "last_started_at": last.isoformat() if last else None,
            }
        )
    return items


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T0 - DAY, T0 + 3 * DAY),  # whole days
        (T0 + 15 * SECOND, T0 + DAY + 30 * SECOND),  # partial hours and whole hours
        (T0 - 30 * MINUTE, T0 + 2 * DAY + 3 * HOUR + SECOND),  # hours and days, and partial hours
        (T0 + 25 * SECOND, T0 + 80 * SECOND),  # within one hour: the executions only
        (T0 + 10 * DAY, T0 + 11 * DAY),  # nothing
    ],
)
async def test_workflow_stats_of_a_window(
    projected: Projected, start: datetime, end: datetime
) -> None:
    p = projected
    answer = await read(p, stats.workflow_stats, p.a.id, start, end)
    assert answer == {"items": expected_items(p.a, start, end)}
    assert [i["name"] for i in answer["items"]] == ["alpha", "beta", "gamma"]


# ---------------------------------------------------------------- plans


async def explain(p: Projected, statement: sql.Composable, params: list[Any]) -> str:
    """The plan, sequential scans off (on tables this small the planner would rightly scan)."""
    async with p.container.pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            cur = await conn.execute(sql.SQL("EXPLAIN {}").format(statement), params)
            return "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())


@pytest.mark.parametrize(
    ("q", "group_by", "rollups"),
    [
        ("", ("status",), True),
        ("status = 'failed'", ("workflow_id",), True),
        ("workflow_id = '00000000-0000-0000-0000-000000000001'", (), True),
        ("", ("trigger",), False),
        ("duration_ms > 5", (), False),
    ],
)
async def test_which_table_a_count_reads(
    projected: Projected, q: str, group_by: tuple[str, ...], rollups: bool
) -> None:
    statement, params = stats.count_statement(projected.a.id, parse(q), group_by)
    plan = await explain(projected, statement, params)
    assert ("rm_execution_stats" in plan) is rollups, plan
    assert ("rm_executions " in plan) is not rollups, plan


@pytest.mark.parametrize(
    ("q", "interval", "rollups"),
    [
        ("", "1m", True),
        ("status IN ('failed', 'timed_out')", "1h", True),
        ("workflow_id = '00000000-0000-0000-0000-000000000001'", "1d", True),
        ("workflow_id = '00000000-0000-0000-0000-000000000001'", "5m", False),
        ("workflow_name = 'alpha'", "1h", False),
    ],
)
async def test_which_table_stats_read(
    projected: Projected, q: str, interval: str, rollups: bool
) -> None:
    statement, params = stats.stats_statement(projected.a.id, parse(q), interval, T0, T0 + DAY)
    plan = await explain(projected, statement, params)
    assert ("rm_execution_stats" in plan) is rollups, plan
    assert ("rm_executions " in plan) is not rollups, plan
    if rollups:  # by the primary key: the workspace, grain, scope and buckets asked for
        assert "rm_execution_stats_pkey" in plan, plan


# ---------------------------------------------------------------- the rollups are exact

Key = tuple[UUID, timedelta, UUID, datetime, str]
SCOPES = ((MINUTE, False), (HOUR, False), (DAY, False), (HOUR, True), (DAY, True))


def bucket_of(at: datetime, grain: timedelta) -> datetime:
    return stats.align(at, grain)


async def rollups_from_rows(conn: Any) -> dict[Key, tuple[int, dict[int, int]]]:
    """What the rollups should hold, from rm_executions (computed here, not in SQL)."""
    cur = await conn.execute(
        "SELECT workspace_id, workflow_id, started_at, status, duration_ms FROM rm_executions"
    )
    expected: dict[Key, tuple[int, dict[int, int]]] = {}
    for row in await cur.fetchall():
        for (grain, per_workflow), status in product(SCOPES, (row["status"], stats.ALL)):
            wf = row["workflow_id"] if per_workflow else stats.NIL
            key = (row["workspace_id"], grain, wf, bucket_of(row["started_at"], grain), status)
            n, bins = expected.get(key, (0, {}))
            bins = dict(bins)
            if row["duration_ms"] is not None:
                b = stats.duration_bin(row["duration_ms"])
                bins[b] = bins.get(b, 0) + 1
            expected[key] = (n + 1, bins)
    return expected


async def rollups_in_table(conn: Any) -> dict[Key, tuple[int, dict[int, int]]]:
    """The rollup rows, each checked to be in its one form (no count 0, histograms from their
    lowest to their highest bin holding any)."""
    cur = await conn.execute(
        "SELECT workspace_id, grain, workflow_id, bucket, status, executions,"
        " array_lower(durations, 1) AS lo, durations, percentiles FROM rm_execution_stats"
    )
    found = {}
    for row in await cur.fetchall():
        key = (row["workspace_id"], row["grain"], row["workflow_id"], row["bucket"], row["status"])
        counts = row["durations"]
        assert row["executions"] > 0, row
        if counts is not None:
            assert counts[0] > 0 and counts[-1] > 0 and min(counts) >= 0, row
        bins = {row["lo"] + i: n for i, n in enumerate(counts or []) if n}
        found[key] = (row["executions"], bins)
        # '*' rows keep the bins of their percentiles, as Python finds them in the histogram.
        stored = None
        if row["status"] == stats.ALL and counts is not None:
            stored = stats.Histogram(row["lo"], counts).percentile_bins(stats.STORED_PERCENTILES)
        assert row["percentiles"] == stored, row
    return found


async def test_the_rollups_hold_what_the_rows_say(projected: Projected) -> None:
    async with projected.container.pool.connection() as conn:
        assert await rollups_in_table(conn) == await rollups_from_rows(conn)
        # The pending rows are a temporary table of each writing session, empty after commit.
        cur = await conn.execute(
            "SELECT to_regclass('pg_temp.rm_execution_stats_pending') IS NOT NULL AS made"
        )
        if (await cur.fetchone())["made"]:
            cur = await conn.execute("SELECT count(*) AS n FROM rm_execution_stats_pending")
            assert (await cur.fetchone())["n"] == 0
        cur = await conn.execute(
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'rm_execution_stats_pending'"
            " AND relpersistence <> 't'"
        )
        assert (await cur.fetchone())["n"] == 0, "no shared pending table to fill with dead rows"
        await conn.commit()


async def snapshot_rollups(conn: Any) -> list[Any]:
    cur = await conn.execute("SELECT * FROM rm_execution_stats ORDER BY rm_execution_stats")
    return await cur.fetchall()


async def test_the_rollups_equal_a_rebuild_whatever_the_batches(fresh_settings: Settings) -> None:
    a, b = workspace_a(), workspace_b()
    events = a.events() + b.events()
    c = await bootstrap(fresh_settings)
    try:
        await project_in_batches(c, events, 1)  # every event its own transaction
        async with c.pool.connection() as conn:
            one_by_one = await snapshot_rollups(conn)
            assert await rollups_in_table(conn) == await rollups_from_rows(conn)
            await reset_read_models(conn)
            await conn.commit()
        await project_in_batches(c, events, len(events))  # all in one
        async with c.pool.connection() as conn:
            assert await snapshot_rollups(conn) == one_by_one
            await reset_read_models(conn)
            await conn.commit()
            cur = await conn.execute("SELECT count(*) AS n FROM rm_execution_stats")
            assert (await cur.fetchone())["n"] == 0
            await conn.commit()
    finally:
        await c.close()


STATUSES = ("running", "completed", "failed", "canceled", "timed_out")


def random_row(rng: random.Random, ws: list[UUID], wfs: list[UUID]) -> dict[str, Any]:
    started = T0 + timedelta(seconds=rng.randrange(0, 3 * 86400))
    status = rng.choice(STATUSES)
    closed = None
    if status != "running":
        closed = started + timedelta(milliseconds=rng.choice([0, 5, 999, 10**5, 10**8]))
    return {
        "workspace_id": rng.choice(ws),
        "workflow_id": rng.choice(wfs),
        "status": status,
        "started_at": started,
        "closed_at": closed,
    }


async def test_random_changes_keep_the_rollups_exact(fresh_settings: Settings) -> None:
    """Inserts, updates (of every column the rollups see, and of others) and deletes of
    rm_executions, one row or several per statement, and upserts (INSERT … ON CONFLICT DO
    UPDATE of new and existing rows together), in random transactions, some rolled back whole
    or to a savepoint."""
    rng = random.Random(14)
    ws, wfs = [uuid4(), uuid4()], [uuid4(), uuid4(), uuid4()]
    ids: list[UUID] = []
    c = await bootstrap(fresh_settings)
    try:
        async with c.pool.connection() as conn:
            for _ in range(60):
                async with conn.transaction(force_rollback=rng.random() < 0.1):
                    for _ in range(rng.randrange(1, 8)):
                        if rng.random() < 0.15:
                            async with conn.transaction(force_rollback=True):
                                await change(conn, rng, ws, wfs, ids)
                        else:
                            await change(conn, rng, ws, wfs, ids)
            cur = await conn.execute("SELECT id FROM rm_executions")
            ids[:] = [row["id"] for row in await cur.fetchall()]
            assert len(ids) > 20
            assert await rollups_in_table(conn) == await rollups_from_rows(conn)
            await conn.commit()
    finally:
        await c.close()


async def change(
    conn: Any, rng: random.Random, ws: list[UUID], wfs: list[UUID], ids: list[UUID]
) -> None:
    kinds = ["insert", "insert", "update", "update", "other", "delete", "several", "upsert"]
    kind = rng.choice(kinds) if ids else "insert"
    if kind == "several":  # one statement, several rows, some changing what the rollups see
        chosen = rng.sample(ids, min(len(ids), rng.randrange(2, 6)))
        statuses = [rng.choice(STATUSES) for _ in chosen]
        await conn.execute(
            "UPDATE rm_executions e SET status = u.status, event_version = e.event_version + 1"
            " FROM unnest(%s::uuid[], %s::text[]) AS u (id, status) WHERE e.id = u.id",
            (chosen, statuses),
        )
    elif kind == "upsert":  # as the projector writes a batch: new rows and replayed ones
        rows = [random_row(rng, ws, wfs) for _ in range(rng.randrange(2, 6))]
        keys: list[UUID] = []
        for _ in rows:  # no key twice in one statement (ON CONFLICT DO UPDATE forbids it)
            existing = [i for i in ids if i not in keys]
            keys.append(rng.choice(existing) if existing and rng.random() < 0.5 else uuid4())
        ids.extend(k for k in keys if k not in ids)
        await conn.execute(
            "INSERT INTO rm_executions (id, workspace_id, workflow_id, version, status, trigger,"
            " started_at, closed_at, event_version)"
            " SELECT id, ws, wf, 1, status, 'manual', started, closed, 1"
            " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[],"
            " %s::timestamptz[]) AS u (id, ws, wf, status, started, closed)"
            " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,"
            " closed_at = EXCLUDED.closed_at",
            (
                keys,
                [r["workspace_id"] for r in rows],
                [r["workflow_id"] for r in rows],
                [r["status"] for r in rows],
                [r["started_at"] for r in rows],
                [r["closed_at"] for r in rows],
            ),
        )
    elif kind == "insert":
        row = random_row(rng, ws, wfs)
        ids.append(uuid4())
        await conn.execute(
            "INSERT INTO rm_executions (id, workspace_id, workflow_id, version, status, trigger,"
            " started_at, closed_at, event_version)"
            " VALUES (%s, %s, %s, 1, %s, 'manual', %s, %s, 1)",
            (
                ids[-1],
                row["workspace_id"],
                row["workflow_id"],
                row["status"],
                row["started_at"],
                row["closed_at"],
            ),
        )
    elif kind == "update":
        row = random_row(rng, ws, wfs)
        column = rng.choice(["workspace_id", "workflow_id", "status", "started_at", "closed_at"])
        values = {column: row[column]}
        if column == "status":  # a status and its close together, as the projector writes them
            values["closed_at"] = row["closed_at"]
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
        await conn.execute(
            sql.SQL("UPDATE rm_executions SET {} WHERE id = %s").format(sets),
            [*values.values(), rng.choice(ids)],
        )
    elif kind == "other":  # changes nothing the rollups count
        await conn.execute(
            "UPDATE rm_executions SET event_version = event_version + 1 WHERE id = %s",
            (rng.choice(ids),),
        )
    else:
        await conn.execute("DELETE FROM rm_executions WHERE id = %s", (rng.choice(ids),))


async def test_a_flush_before_commit_leaves_later_changes_to_the_next(
    fresh_settings: Settings,
) -> None:
    """`SET CONSTRAINTS … IMMEDIATE` folds what is pending at once; rows written after it in
    the same transaction are still folded at commit."""
    a = workspace_a()
    events = [(None, e) for e in a.events()]
    half = len(events) // 2
    c = await bootstrap(fresh_settings)
    try:
        async with c.pool.connection() as conn:
            async with conn.transaction():
                await project(conn, events[:half])
                await conn.execute("SET CONSTRAINTS rm_execution_stats_pending_flush IMMEDIATE")
                await conn.execute("SET CONSTRAINTS rm_execution_stats_pending_flush DEFERRED")
                await project(conn, events[half:])
            assert await rollups_in_table(conn) == await rollups_from_rows(conn)
            await conn.commit()
    finally:
        await c.close()


# ---------------------------------------------------------------- bins and the migration


async def test_sql_bins_durations_as_python_does(projected: Projected) -> None:
    durations = sorted(
        {d for b in stats.BOUNDS for d in (b - 1, b, b + 1) if d >= -1} | {-5, 10**13}
    )
    async with projected.container.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT d, rm_stats_duration_bin(d) AS bin FROM unnest(%s::bigint[]) d",
            (durations,),
        )
        rows = await cur.fetchall()
        cur = await conn.execute("SELECT rm_stats_duration_bin(NULL) AS bin")
        assert (await cur.fetchone())["bin"] is None
        await conn.commit()
    assert {row["d"]: row["bin"] for row in rows} == {d: stats.duration_bin(d) for d in durations}


def test_migration_013_rolls_up_the_rows_projected_before_it(redis_url: str) -> None:
    settings = Settings(pg_db=f"lf_test_{uuid.uuid4().hex[:10]}", redis_url=redis_url)
    create_database(settings)
    ws, wf = uuid4(), uuid4()
    rows = [("completed", T0, 1500), ("completed", T0 + MINUTE, 1500), ("running", T0, None)]
    try:
        with psycopg.connect(settings.conninfo) as conn:
            for path in sorted(MIGRATIONS.glob("*.sql")):
                if path.name >= "013":
                    break
                conn.execute(path.read_text())  # type: ignore[arg-type]
            for status, started, ms in rows:
                closed = started + timedelta(milliseconds=ms) if ms is not None else None
                conn.execute(
                    "INSERT INTO rm_executions (id, workspace_id, workflow_id, version, status,"
                    " trigger, started_at, closed_at, event_version)"
                    " VALUES (%s, %s, %s, 1, %s, 'manual', %s, %s, 1)",
                    (uuid4(), ws, wf, status, started, closed),
                )
            conn.execute((MIGRATIONS / "013_execution_stats.sql").read_text())  # type: ignore[arg-type]
            found = conn.execute(
                "SELECT grain, workflow_id, bucket, status, executions,"
                " array_lower(durations, 1), durations, percentiles FROM rm_execution_stats"
                ' ORDER BY grain, workflow_id, bucket, status COLLATE "C"'
            ).fetchall()
        b = stats.duration_bin(1500)
        day, ps = T0 - 8 * HOUR, [b, b, b]
        assert found == [
            (MINUTE, stats.NIL, T0, "*", 2, b, [1], ps),
            (MINUTE, stats.NIL, T0, "completed", 1, b, [1], None),
            (MINUTE, stats.NIL, T0, "running", 1, None, None, None),
            (MINUTE, stats.NIL, T0 + MINUTE, "*", 1, b, [1], ps),
            (MINUTE, stats.NIL, T0 + MINUTE, "completed", 1, b, [1], None),
            (HOUR, stats.NIL, T0, "*", 3, b, [2], ps),
            (HOUR, stats.NIL, T0, "completed", 2, b, [2], None),
            (HOUR, stats.NIL, T0, "running", 1, None, None, None),
            (HOUR, wf, T0, "*", 3, b, [2], ps),
            (HOUR, wf, T0, "completed", 2, b, [2], None),
            (HOUR, wf, T0, "running", 1, None, None, None),
            (DAY, stats.NIL, day, "*", 3, b, [2], ps),
            (DAY, stats.NIL, day, "completed", 2, b, [2], None),
            (DAY, stats.NIL, day, "running", 1, None, None, None),
            (DAY, wf, day, "*", 3, b, [2], ps),
            (DAY, wf, day, "completed", 2, b, [2], None),
            (DAY, wf, day, "running", 1, None, None, None),
        ]
    finally:
        drop_database(settings)
