"""Statistics routes: exact counts of executions (`…/executions/count`, optionally grouped),
time-bucketed statistics (`…/executions/stats`) and per-workflow statistics
(`…/workflows/stats`), answered by `projections.stats` (which says when the rollups answer and
when the executions themselves do). Reading needs the viewer role; `?min_position` waits for
the projector as on lists. `ROUTES` is registered by `app.api_routes` before the execution
routes, so that `/executions/count` is not taken for an execution id. Imported by
`gateways.http.app`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from domain.roles import Action
from gateways.http.auth import workspace_access
from gateways.http.consistency import MIN_POSITION, answer_read
from gateways.http.errors import ApiError
from gateways.http.routes_executions import Q_DESCRIPTION, WS, parse_timestamp, parsed_query
from gateways.http.routing import Param, Route
from projections import stats
from projections.query_language import MAX_QUERY_LENGTH, ExecutionQuery

DEFAULT_SPAN = timedelta(hours=24)
DEFAULT_INTERVAL = "1h"
# The longest window of per-workflow statistics (as many days as stats has buckets).
MAX_WINDOW = timedelta(days=stats.MAX_BUCKETS)
# A `from`/`to` past these is not a time anything started at (and date_bin would overflow).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

Problems = list[dict[str, str]]


def _refuse(problems: Problems) -> None:
    if problems:
        raise ApiError(422, "invalid_request", "the request is invalid", problems)


def _time(request: web.Request, name: str, problems: Problems) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = parse_timestamp(raw)
    except ValueError:
        problems.append({"path": name, "message": "must be an ISO 8601 date-time"})
        return None
    if not EARLIEST <= value < LATEST:
        problems.append({"path": name, "message": "must be between 1970 and 9000"})
        return None
    return value


def _window(request: web.Request, problems: Problems) -> tuple[datetime, datetime]:
    """`from` and `to`: by default the 24 hours before now; `from` must come before `to`."""
    start, end = _time(request, "from", problems), _time(request, "to", problems)
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_SPAN
    if not problems and start >= end:
        problems.append({"path": "from", "message": "must be before to"})
    return start, end


def _query(request: web.Request) -> ExecutionQuery | None:
    q = request.query.get("q")
    return parsed_query(q) if q else None


def _group_by(request: web.Request, problems: Problems) -> list[str]:
    raw = request.query.get("group_by", "")
    names = [name.strip() for name in raw.split(",")] if raw else []
    allowed = ", ".join(stats.GROUP_FIELDS)
    unknown = [name for name in names if name not in stats.GROUP_FIELDS]
    if unknown:
        message = f"{unknown[0]!r} cannot be grouped by; allowed: {allowed}"
        problems.append({"path": "group_by", "message": message})
    elif len(set(names)) != len(names):
        problems.append({"path": "group_by", "message": "names a field twice"})
    return names


async def count_executions(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    problems: Problems = []
    group_by = _group_by(request, problems)
    _refuse(problems)
    return await answer_read(
        request, stats.count_executions, ws, q=_query(request), group_by=group_by
    )


def _interval(request: web.Request, problems: Problems) -> str:
    interval = request.query.get("interval") or DEFAULT_INTERVAL
    if interval not in stats.INTERVALS:
        problems.append(
            {"path": "interval", "message": f"must be one of {', '.join(stats.INTERVALS)}"}
        )
    return interval


def _bucket_limit(start: datetime, end: datetime, interval: str) -> None:
    count = stats.bucket_count(start, end, stats.INTERVALS[interval])
    if count > stats.MAX_BUCKETS:
        message = (
            f"from … to at {interval} is {count} buckets, more than {stats.MAX_BUCKETS}:"
            " take a longer interval or a later from"
        )
        _refuse([{"path": "interval", "message": message}, {"path": "from", "message": message}])


async def execution_stats(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    problems: Problems = []
    interval = _interval(request, problems)
    start, end = _window(request, problems)
    _refuse(problems)
    _bucket_limit(start, end, interval)
    return await answer_read(
        request, stats.execution_stats, ws, start, end, interval, q=_query(request)
    )


async def workflow_stats(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    problems: Problems = []
    start, end = _window(request, problems)
    if not problems and end - start > MAX_WINDOW:
        problems.append({"path": "from", "message": f"at most {MAX_WINDOW.days} days before to"})
    _refuse(problems)
    return await answer_read(request, stats.workflow_stats, ws, start, end)


_DATE_TIME = {"type": "string", "format": "date-time"}
_Q = Param(
    "q",
    {"type": "string", "maxLength": MAX_QUERY_LENGTH},
    Q_DESCRIPTION + ". Its ORDER BY is ignored here",
)
_FROM = Param(
    "from",
    _DATE_TIME,
    "ISO 8601; default: 24 hours before to. Executions are counted by when they started",
)
_TO = Param("to", _DATE_TIME, "ISO 8601, exclusive; default: now")
_DEFINITIONS = (
    " failure_rate = (failed + timed_out) / closed executions (completed, failed, canceled,"
    " timed_out), null when none is closed; duration_ms percentiles are nearest-rank over the"
    " closed executions, within 2.5 % of the exact value (exact below 20 ms), null when none is"
    " closed."
)
_INVALID: dict[int, str] = {
    422: "invalid_request: details [{path, message}] name the parameter; invalid_query:"
    ' details [{path: "q", message, position}]'
}

ROUTES: list[Route] = [
    Route(
        "GET",
        WS + "/executions/count",
        count_executions,
        "Exact count of the executions matching q, optionally grouped:"
        " {count, groups: [{values: {field: value}, count}], position} (largest groups first;"
        " position: the projector position the answer reflects)",
        params=(
            _Q,
            Param(
                "group_by",
                {"type": "string"},
                "comma-separated fields to group by: " + ", ".join(stats.GROUP_FIELDS),
            ),
            MIN_POSITION,
        ),
        extra_responses=_INVALID,
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/executions/stats",
        execution_stats,
        "Executions matching q per time bucket (by started_at, aligned in UTC, empty buckets"
        " included): {interval, buckets: [{start, total, by_status, failure_rate, duration_ms:"
        " {p50, p95, p99}}], position}; a bucket counts every execution started in it, also"
        f" where from/to cut it; at most {stats.MAX_BUCKETS} buckets." + _DEFINITIONS,
        params=(
            _Q,
            _FROM,
            _TO,
            Param(
                "interval",
                {"type": "string", "enum": list(stats.INTERVALS), "default": DEFAULT_INTERVAL},
                "the buckets' length",
            ),
            MIN_POSITION,
        ),
        extra_responses=_INVALID,
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/workflows/stats",
        workflow_stats,
        "Per workflow (every one not archived, by name): its executions started in [from, to):"
        " {items: [{workflow_id, name, total, by_status, failure_rate, duration_ms: {p50, p95},"
        " last_started_at}]}; last_started_at is its latest start at any time; a window of at"
        f" most {MAX_WINDOW.days} days." + _DEFINITIONS,
        params=(_FROM, _TO, MIN_POSITION),
        extra_responses=_INVALID,
        tag="workflows",
    ),
]
