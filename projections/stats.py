"""Exact counts, time-bucketed statistics and per-workflow statistics of a workspace's
executions (`GET …/executions/count`, `…/executions/stats`, `…/workflows/stats`). Imported by
`gateways.http.routes_stats`; the pure parts (duration bins, histograms, percentiles, buckets,
windows) are unit-tested on their own.

Where an answer comes from:
- the rollups `rm_execution_stats` (migration 013: per bucket and status, the count and the
  duration histogram, kept exact by PostgreSQL from `rm_executions`; per bucket also a row of
  status '*' whose histogram covers every status): whole-workspace rows at grains minute, hour
  and day, per-workflow rows at grains hour and day. A query whose filter `q` names only
  `status` and `workflow_id` (the rollup's own columns: `where_sql` compiles the same condition
  for either table) is answered from them, reading one row per bucket and status (and workflow,
  where the filter names workflows), however many executions there are; percentiles come from
  the '*' histograms unless the filter names statuses:
  - count: the day rows of all time; `group_by` status and/or workflow_id;
  - stats: interval 1m and 5m from minute rows, 1h from hour rows, 1d from day rows; the
    per-workflow rows (a `q` naming workflow_id) only at 1h and 1d;
  - workflow stats: the whole hours and days of the window from the rollups, the partial hours
    at its edges (at most two) from `rm_executions` (index `rm_executions_ws_wf`).
- `rm_executions` itself (the fallback): any other `q` (other fields, search attributes),
  `group_by` of another column, and per-workflow stats at 1m or 5m. Its cost grows with the
  executions that match (within the buckets asked for, for stats).
Both paths give the same answer for the same executions: the fallback bins durations with the
same SQL function and the same Python code computes percentiles.

Definitions:
- a stats bucket counts every execution that *started* in it (`[start, start + interval)`,
  aligned in UTC), also where `from`/`to` cut it; buckets run from the one holding `from` to
  the one holding the instant before `to`, empty ones included;
- failure_rate = (failed + timed_out) / closed (closed: completed, failed, canceled,
  timed_out), None when none is closed;
- duration percentiles are over closed executions, nearest-rank (the smallest duration with at
  least p % of them at or below it), read from a log-scale histogram: within 2.5 % of the
  exact value (exact below 20 ms); None when none is closed.
A query's ORDER BY is ignored here. Every answer reads one snapshot (REPEATABLE READ); counts
and stats say the projector position it reflects.
"""

from __future__ import annotations

import itertools
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql

from domain.statuses import ExecutionStatus
from infra.db import DictConnection
from projections.queries import PROJECTOR
from projections.query_language import (
    FIELDS,
    And,
    ExecutionQuery,
    Expr,
    FieldType,
    Not,
    Or,
    where_sql,
)

# ---------------------------------------------------------------- duration bins


def _bounds(limit: int = 10**12) -> tuple[int, ...]:
    """The lower bound of each duration bin (ms), as migration 013 computes them."""
    bounds = [0]
    while bounds[-1] < limit:
        bounds.append(bounds[-1] + max(1, bounds[-1] // 20))
    return tuple(bounds)


BOUNDS = _bounds()
RELATIVE_ERROR = 0.025


def duration_bin(duration_ms: int) -> int:
    """The bin of a duration (negative: 0), as `rm_stats_duration_bin` in SQL."""
    return bisect_right(BOUNDS, max(duration_ms, 0)) - 1


def bin_value(bin_: int) -> int:
    """The duration a bin stands for: its middle (rounded down), within 2.5 % of every
    duration in it; the last, open bin stands for its lower bound."""
    lo = BOUNDS[bin_]
    if bin_ + 1 == len(BOUNDS):
        return lo
    return lo + (BOUNDS[bin_ + 1] - lo - 1) // 2


@dataclass
class Histogram:
    """Counts of durations per bin: `counts[i]` in bin `lo + i`."""

    lo: int = 0
    counts: list[int] = field(default_factory=list)

    def add(self, lo: int, counts: Sequence[int]) -> None:
        """Add the histogram whose bins `lo`, `lo + 1`, … hold `counts`."""
        if not counts:
            return
        if not self.counts:
            self.lo, self.counts = lo, list(counts)
            return
        if lo < self.lo:
            self.counts[:0] = [0] * (self.lo - lo)
            self.lo = lo
        missing = lo + len(counts) - (self.lo + len(self.counts))
        if missing > 0:
            self.counts.extend([0] * missing)
        start = lo - self.lo
        end = start + len(counts)
        self.counts[start:end] = map(operator.add, self.counts[start:end], counts)

    def percentile_bins(self, ps: Sequence[int]) -> list[int] | None:
        """The bin of the nearest-rank p-th percentile of each p (0 < p <= 100): the first
        whose running count reaches ceil(p % of the count), as `rm_stats_percentile_bins`
        does in SQL; None when empty."""
        cumulative = list(itertools.accumulate(self.counts))
        total = cumulative[-1] if cumulative else 0
        if not total:
            return None
        # ceil(p / 100 * total), in integers
        return [self.lo + bisect_left(cumulative, -(-p * total // 100)) for p in ps]

    def percentiles(self, ps: Sequence[int]) -> dict[str, int | None]:
        """`{"p50": …}`: the duration each percentile's bin stands for (None when empty)."""
        return named(ps, self.percentile_bins(ps))


def named(ps: Sequence[int], bins: Sequence[int] | None) -> dict[str, int | None]:
    """`{"p50": duration, …}` of the percentiles `ps` whose bins are `bins` (None: none)."""
    if bins is None:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": bin_value(b) for p, b in zip(ps, bins, strict=True)}


# ---------------------------------------------------------------- tallies

STATUSES = tuple(s.value for s in ExecutionStatus)
# The percentiles whose bins the '*' rollup rows keep (migration 013: rm_stats_percentile_bins).
STORED_PERCENTILES = (50, 95, 99)
FAILED = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)
CLOSED = (*FAILED, ExecutionStatus.COMPLETED, ExecutionStatus.CANCELED)


@dataclass
class Tally:
    """Executions by status, and the histogram of the closed ones' durations."""

    by_status: dict[str, int] = field(default_factory=dict)
    durations: Histogram = field(default_factory=Histogram)
    # The STORED_PERCENTILES' bins as a '*' rollup row keeps them, when read instead of the
    # histogram (then the tally holds that one row's executions).
    stored: list[int] | None = None

    def add(
        self, status: str, executions: int, lo: int | None, counts: Sequence[int] | None
    ) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + executions
        self.add_durations(lo, counts)

    def add_durations(self, lo: int | None, counts: Sequence[int] | None) -> None:
        if lo is not None and counts:
            self.durations.add(lo, counts)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def failure_rate(self) -> float | None:
        closed = sum(self.by_status.get(s, 0) for s in CLOSED)
        failed = sum(self.by_status.get(s, 0) for s in FAILED)
        return failed / closed if closed else None

    def summary(self, percentiles: Sequence[int]) -> dict[str, Any]:
        """total, by_status (every status, 0 included), failure_rate and duration_ms."""
        if self.stored is not None:
            assert tuple(percentiles) == STORED_PERCENTILES
            durations = named(percentiles, self.stored)
        else:
            durations = self.durations.percentiles(percentiles)
        return {
            "total": self.total,
            "by_status": dict.fromkeys(STATUSES, 0) | self.by_status,
            "failure_rate": self.failure_rate(),
            "duration_ms": durations,
        }


# ---------------------------------------------------------------- buckets and windows

ORIGIN = datetime(2001, 1, 1, tzinfo=UTC)  # date_bin's origin in migration 013
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
INTERVALS: dict[str, timedelta] = {"1m": MINUTE, "5m": 5 * MINUTE, "1h": HOUR, "1d": DAY}
# The rollup grain each interval reads.
_GRAIN = {"1m": MINUTE, "5m": MINUTE, "1h": HOUR, "1d": DAY}
MAX_BUCKETS = 1000


def align(at: datetime, step: timedelta) -> datetime:
    """The start of the `step`-long bucket holding `at` (aligned in UTC)."""
    return ORIGIN + (at - ORIGIN) // step * step


def align_up(at: datetime, step: timedelta) -> datetime:
    start = align(at, step)
    return start if start == at else start + step


def bucket_count(start: datetime, end: datetime, step: timedelta) -> int:
    """How many buckets of `step` cover [start, end) (start < end)."""
    first = align(start, step)
    return -(-(end - first) // step)


@dataclass(frozen=True)
class Window:
    """[start, end) split into what the rollups hold whole (`days`, `hours`: per-workflow
    rollups have no minutes) and the partial hours at its edges (`exact`: from the rows)."""

    days: tuple[tuple[datetime, datetime], ...]
    hours: tuple[tuple[datetime, datetime], ...]
    exact: tuple[tuple[datetime, datetime], ...]


def split_window(start: datetime, end: datetime) -> Window:
    def spans(*pairs: tuple[datetime, datetime]) -> tuple[tuple[datetime, datetime], ...]:
        return tuple((a, b) for a, b in pairs if a < b)

    first_hour, last_hour = align_up(start, HOUR), align(end, HOUR)
    if first_hour >= last_hour:
        return Window((), (), spans((start, end)))
    exact = spans((start, first_hour), (last_hour, end))
    first_day, last_day = align_up(first_hour, DAY), align(last_hour, DAY)
    if first_day >= last_day:
        return Window((), spans((first_hour, last_hour)), exact)
    hours = spans((first_hour, first_day), (last_day, last_hour))
    return Window(spans((first_day, last_day)), hours, exact)


# ---------------------------------------------------------------- filters

NIL = UUID(int=0)  # the rollup's workflow_id of whole-workspace rows
ALL = "*"  # the rollup's status of rows counting every status
ROLLUP_FIELDS = frozenset({"status", "workflow_id"})
GROUP_FIELDS = (
    "status",
    "workflow_id",
    "trigger",
    "workflow_name",
    "error_code",
    "failed_node",
    "version",
)


def _fields(expr: Expr) -> set[str]:
    if isinstance(expr, Not):
        return _fields(expr.operand)
    if isinstance(expr, And | Or):
        return set().union(*(_fields(o) for o in expr.operands))
    return {expr.field.name}


def filter_fields(q: ExecutionQuery) -> set[str]:
    """The fields the filter's condition names."""
    return _fields(q.where) if q.where is not None else set()


@dataclass(frozen=True)
class _Condition:
    """A WHERE clause (its parts ANDed) and its parameters."""

    parts: tuple[sql.Composable, ...]
    params: tuple[Any, ...]

    def sql(self) -> sql.Composed:
        return sql.SQL(" AND ").join(self.parts)

    def and_(self, part: str, *params: Any) -> _Condition:
        return _Condition((*self.parts, sql.SQL(part)), (*self.params, *params))


def _matching(workspace_id: UUID, q: ExecutionQuery) -> _Condition:
    """The workspace's rows that match the filter's condition."""
    condition = _Condition((sql.SQL("workspace_id = %s"),), (workspace_id,))
    if q.where is None:
        return condition
    compiled, params = where_sql(q.where)
    return _Condition((*condition.parts, compiled), (*condition.params, *params))


def _rollup_rows(workspace_id: UUID, q: ExecutionQuery, per_workflow: bool) -> _Condition:
    """The rollup rows matching the filter: per workflow, or the whole-workspace ones."""
    scope = "workflow_id > %s" if per_workflow else "workflow_id = %s"
    return _matching(workspace_id, q).and_(scope, NIL)


# ---------------------------------------------------------------- reading


async def _snapshot(conn: DictConnection) -> int:
    """Begin one read-only REPEATABLE READ snapshot; the projector position it reflects."""
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    cur = await conn.execute(
        "SELECT position FROM consumer_positions WHERE consumer = %s", (PROJECTOR,)
    )
    row = await cur.fetchone()
    return int(row["position"]) if row else 0


async def _rows(
    conn: DictConnection, statement: sql.SQL | sql.Composed, params: Sequence[Any]
) -> list[dict[str, Any]]:
    """The rows in binary (histograms are read as arrays of integers, not parsed from text).
    Never prepared: a generic plan is blind to the values (the nil workflow_id of the
    whole-workspace rollups is most of the table, a workflow's id a sliver)."""
    cur = conn.cursor(binary=True)
    await cur.execute(statement, params, prepare=False)
    return await cur.fetchall()


# ---------------------------------------------------------------- count


def _group_values(row: dict[str, Any], group_by: Sequence[str]) -> dict[str, Any]:
    values = {}
    for name in group_by:
        value = row[name]
        values[name] = str(value) if isinstance(value, UUID) else value
    return values


Statement = tuple[sql.Composed, list[Any]]


def _order_of(name: str, position: int) -> sql.Composable:
    """Ties of a group's count go by its values, text in byte order (whatever the collation),
    NULLs last."""
    if FIELDS[name].type in (FieldType.TEXT, FieldType.ENUM):
        return sql.SQL('{} COLLATE "C"').format(sql.Identifier(FIELDS[name].column or name))
    return sql.Literal(position)


def count_statement(
    workspace_id: UUID, q: ExecutionQuery, group_by: Sequence[str] = ()
) -> Statement:
    """The count (one row), or the count per group (largest first), of the executions
    matching `q`: from the day rollups when `q` and `group_by` name only their columns."""
    names = filter_fields(q)
    columns = [sql.Identifier(FIELDS[name].column or name) for name in group_by]
    if names <= ROLLUP_FIELDS and set(group_by) <= ROLLUP_FIELDS:
        per_workflow = "workflow_id" in names or "workflow_id" in group_by
        condition = (
            _rollup_rows(workspace_id, q, per_workflow)
            .and_("grain = %s", DAY)
            .and_("status <> %s", ALL)
        )
        total = sql.SQL("sum(executions)::bigint")
        table = sql.Identifier("rm_execution_stats")
    else:
        condition = _matching(workspace_id, q)
        total = sql.SQL("count(*)")
        table = sql.Identifier("rm_executions")
    statement = sql.SQL("SELECT {} AS count FROM {} WHERE {}").format(
        sql.SQL(", ").join([*columns, total]), table, condition.sql()
    )
    if columns:
        positions = sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(columns)))
        order = sql.SQL(", ").join(_order_of(name, i + 1) for i, name in enumerate(group_by))
        statement = sql.SQL("{} GROUP BY {} ORDER BY {} DESC, {}").format(
            statement, positions, sql.Literal(len(columns) + 1), order
        )
    return statement, list(condition.params)


async def count_executions(
    conn: DictConnection,
    workspace_id: UUID,
    q: ExecutionQuery | None = None,
    group_by: Sequence[str] = (),
) -> dict[str, Any]:
    """`{count, groups: [{values, count}], position}`: the executions matching `q`, grouped
    by the columns `group_by` (names of `GROUP_FIELDS`), largest groups first."""
    statement, params = count_statement(workspace_id, q or ExecutionQuery(), group_by)
    position = await _snapshot(conn)
    rows = await _rows(conn, statement, params)
    if not group_by:
        return {"count": int(rows[0]["count"] or 0), "groups": [], "position": position}
    groups = [{"values": _group_values(row, group_by), "count": int(row["count"])} for row in rows]
    return {"count": sum(g["count"] for g in groups), "groups": groups, "position": position}


# ---------------------------------------------------------------- stats over time

# Rollup rows: each status's count, with the histograms of the rows `{0}` selects and the
# percentile bins of those `{1}` selects (see `_ROLLUP_READS`).
_ROLLUP_COLUMNS = (
    "status, executions, CASE WHEN {0} THEN array_lower(durations, 1) END AS lo,"
    " CASE WHEN {0} THEN durations END AS durations,"
    " CASE WHEN {1} THEN percentiles END AS percentiles FROM rm_execution_stats"
)
_ROLLUP_ROW = sql.SQL("SELECT bucket AS at, " + _ROLLUP_COLUMNS + " WHERE {2}")
_IS_ALL = sql.SQL("status = {}").format(sql.Literal(ALL))
# What the percentiles are read from: the statuses' histograms, merged (a filter naming
# statuses); the '*' rows' histograms (no merging per status; several rows a bucket: 5m);
# the '*' rows' percentile bins (one row a bucket: nothing to compute).
_ROLLUP_READS = {
    "statuses": (sql.SQL("true"), sql.SQL("false")),
    "histogram": (_IS_ALL, sql.SQL("false")),
    "stored": (sql.SQL("false"), _IS_ALL),
}
# Executions binned as the rollups bin them.
_EXECUTION_ROWS = sql.SQL(
    "SELECT date_bin(%s, started_at, %s) AS at, status, count(*) AS executions,"
    " rm_stats_duration_bin(duration_ms) AS lo, NULL::int[] AS durations,"
    " NULL::int[] AS percentiles FROM rm_executions WHERE {} GROUP BY 1, 2, 4"
)


def _add_row(tally: Tally, row: dict[str, Any]) -> None:
    """A rollup row (`lo` the lowest bin of `durations`; '*' adds its histogram or its
    percentile bins only), or a row of executions binned by `_EXECUTION_ROWS` (`lo` their one
    bin, no `durations`)."""
    durations = row["durations"]
    if durations is None and row["lo"] is not None:
        durations = [row["executions"]]
    if row["status"] != ALL:
        tally.add(row["status"], int(row["executions"]), row["lo"], durations)
    elif row["percentiles"] is not None:
        tally.stored = row["percentiles"]
    else:
        tally.add_durations(row["lo"], durations)


def bucket_starts(start: datetime, end: datetime, interval: str) -> list[datetime]:
    """The starts of the buckets of `interval` covering [start, end)."""
    step = INTERVALS[interval]
    first = align(start, step)
    return [first + i * step for i in range(bucket_count(start, end, step))]


def stats_statement(
    workspace_id: UUID, q: ExecutionQuery, interval: str, first: datetime, last: datetime
) -> Statement:
    """Rows (at, status, executions, lo, durations) of the executions matching `q` that
    started in [first, last) (whole buckets of `interval`): the rollup rows of the interval's
    grain when they can answer, else the executions grouped by `_EXECUTION_ROWS`."""
    names = filter_fields(q)
    per_workflow = "workflow_id" in names
    grain = _GRAIN[interval]
    if names <= ROLLUP_FIELDS and not (per_workflow and grain == MINUTE):
        condition = (
            _rollup_rows(workspace_id, q, per_workflow)
            .and_("grain = %s", grain)
            .and_("bucket >= %s AND bucket < %s", first, last)
        )
        if "status" in names:  # a NOT of a status predicate would take '*' too
            condition = condition.and_("status <> %s", ALL)
            read = "statuses"
        else:
            read = "histogram" if INTERVALS[interval] != grain else "stored"
        statement = _ROLLUP_ROW.format(*_ROLLUP_READS[read], condition.sql())
        return statement, list(condition.params)
    condition = _matching(workspace_id, q).and_("started_at >= %s AND started_at < %s", first, last)
    step = INTERVALS[interval]
    return _EXECUTION_ROWS.format(condition.sql()), [step, ORIGIN, *condition.params]


async def execution_stats(
    conn: DictConnection,
    workspace_id: UUID,
    start: datetime,
    end: datetime,
    interval: str,
    q: ExecutionQuery | None = None,
) -> dict[str, Any]:
    """`{interval, buckets: [{start, total, by_status, failure_rate, duration_ms: {p50, p95,
    p99}}], position}` for the buckets of `interval` covering [start, end) (the caller keeps
    them within MAX_BUCKETS)."""
    step = INTERVALS[interval]
    starts = bucket_starts(start, end, interval)
    statement, params = stats_statement(
        workspace_id, q or ExecutionQuery(), interval, starts[0], starts[-1] + step
    )
    position = await _snapshot(conn)
    tallies = {at: Tally() for at in starts}
    for row in await _rows(conn, statement, params):
        at = row["at"]  # a bucket's start, unless the interval (5m) spans rollup buckets
        _add_row(tallies.get(at) or tallies[align(at, step)], row)
    buckets = [
        {"start": at.isoformat(), **tally.summary(STORED_PERCENTILES)}
        for at, tally in tallies.items()
    ]
    return {"interval": interval, "buckets": buckets, "position": position}


# ---------------------------------------------------------------- per workflow

_WORKFLOWS = (
    "SELECT w.id, w.name, (SELECT max(e.started_at) FROM rm_executions e"
    " WHERE e.workspace_id = w.workspace_id AND e.workflow_id = w.id) AS last_started_at"
    " FROM rm_workflows w WHERE w.workspace_id = %s AND NOT w.archived ORDER BY w.name, w.id"
)
_WORKFLOW_ROLLUP = sql.SQL(
    "SELECT workflow_id, " + _ROLLUP_COLUMNS + " WHERE workspace_id = %s AND grain = %s"
    " AND workflow_id = ANY(%s) AND bucket >= %s AND bucket < %s"
).format(*_ROLLUP_READS["histogram"])
_WORKFLOW_EXECUTIONS = sql.SQL(
    "SELECT workflow_id, status, count(*) AS executions,"
    " rm_stats_duration_bin(duration_ms) AS lo, NULL::int[] AS durations,"
    " NULL::int[] AS percentiles FROM rm_executions"
    " WHERE workspace_id = %s AND workflow_id = ANY(%s)"
    " AND started_at >= %s AND started_at < %s GROUP BY 1, 2, 4"
)


def _window_statement(
    workspace_id: UUID, workflows: list[UUID], window: Window
) -> tuple[sql.Composed, list[Any]]:
    """One UNION ALL of the window's parts: whole days and hours from the rollups, the partial
    hours from the executions."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for grain, spans in ((DAY, window.days), (HOUR, window.hours)):
        for a, b in spans:
            parts.append(_WORKFLOW_ROLLUP)
            params += [workspace_id, grain, workflows, a, b]
    for a, b in window.exact:
        parts.append(_WORKFLOW_EXECUTIONS)
        params += [workspace_id, workflows, a, b]
    return sql.SQL(" UNION ALL ").join(parts), params


async def workflow_stats(
    conn: DictConnection, workspace_id: UUID, start: datetime, end: datetime
) -> dict[str, Any]:
    """`{items: [{workflow_id, name, total, by_status, failure_rate, duration_ms: {p50, p95},
    last_started_at}]}`: every workflow of the workspace not archived (by name), with its
    executions started in [start, end) (zeros when none) and its latest start at any time."""
    await _snapshot(conn)
    workflows = await _rows(conn, sql.SQL(_WORKFLOWS), [workspace_id])
    tallies = {row["id"]: Tally() for row in workflows}
    if tallies:
        statement, params = _window_statement(workspace_id, list(tallies), split_window(start, end))
        for row in await _rows(conn, statement, params):
            _add_row(tallies[row["workflow_id"]], row)
    items = []
    for row in workflows:
        last = row["last_started_at"]
        items.append(
            {
                "workflow_id": str(row["id"]),
                "name": row["name"],
                **tallies[row["id"]].summary((50, 95)),
                "last_started_at": last.isoformat() if last else None,
            }
        )
    return {"items": items}
