"""The SSE routes (`text/event-stream`, ../shared/API.md part 2, "Visibility for analysts"):

- `GET …/executions/{id}/events`: one SSE event per recorded event of the execution (`id:` its
  position, `event:` its type, `data:` the history entry plus `position`), from the first or
  after `Last-Event-ID`, then live; the response ends after the closing event. A client that
  already has the closing event (its `Last-Event-ID` is at or past it) gets 204, which tells a
  browser's EventSource to stop reconnecting.
- `GET …/executions/live?q=`: `event: execution` with the list item each time an execution of
  the workspace that matches `q` changes status (started, then closed), `id:` the position of the
  change (`rm_executions.status_position`). From the moment of the request, or after
  `Last-Event-ID`: then every execution whose status changed since that position comes first,
  once, as it is now (a running-then-completed execution is one `completed` event), in the order
  of its last change, then the live changes. `ORDER BY` in `q` is accepted and ignored.

Both need the viewer role (`Action.READ`), take the token from `Authorization: Bearer` or, for
browsers, `?access_token=`, and send `: keep-alive` after `LINKFLOW_SSE_HEARTBEAT_S` (15) quiet
seconds. Their access is checked again every `LINKFLOW_SSE_ACCESS_CHECK_S` (30) seconds: a
stream whose token expired, whose member was removed or demoted, or whose API key was revoked is
cut off. A malformed or future `Last-Event-ID` is 422 naming it; past `LINKFLOW_SSE_MAX_STREAMS`
open streams a new one is 503 `too_many_streams` with Retry-After. The request deadline covers
everything before the stream starts, not the stream (`deadline.lift_deadline`). How events reach
the streams is `gateways.http.live`. `ROUTES` is registered by `gateways.http.app` before the
execution routes (so `/executions/live` is not read as an execution id). Imported by
`gateways.http.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from aiohttp import web
from psycopg import sql

from domain.roles import Action
from gateways.http.auth import still_permitted, workspace_access
from gateways.http.context import container
from gateways.http.deadline import lift_deadline
from gateways.http.errors import ApiError, invalid, parse_uuid
from gateways.http.live import (
    CLOSING_TOPICS,
    HUB,
    PAGE,
    STARTED_TOPIC,
    Client,
    Disconnected,
    Stream,
    change_message,
    event_message,
)
from gateways.http.routes_executions import Q_DESCRIPTION, parsed_query
from gateways.http.routing import Param, Route
from infra import metrics
from infra.db import DictConnection, DictPool
from infra.eventlog import LoggedEvent, head_position
from infra.eventstore import EVENTS_TABLE, EventStore
from projections.query_language import MAX_QUERY_LENGTH, Expr, where_sql

WS = "/api/v1/workspaces/{ws}"
LAST_EVENT_ID = "Last-Event-ID"
_POSITION = re.compile(r"[0-9]{1,19}")
_EVENTS = sql.Identifier(EVENTS_TABLE)
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# The first bytes of a stream, so that its client sees it open at once.
OPENED = b": open\n\n"
# Events of one execution read from the event store per query (ExecutionStarted carries the
# definition and the input: keep pages small).
HISTORY_PAGE = 100


def last_event_id(request: web.Request) -> int | None:
    """The `Last-Event-ID` header as a position (None when absent or empty), else 422."""
    raw = request.headers.get(LAST_EVENT_ID, "").strip()
    if not raw:
        return None
    if not _POSITION.fullmatch(raw) or int(raw) >= 2**63:
        raise invalid(LAST_EVENT_ID, "must be the id of an event this stream sent (a position)")
    return int(raw)


async def _not_past_head(pool: DictPool, position: int) -> None:
    async with pool.connection() as conn:
        if position > await head_position(conn):
            raise invalid(LAST_EVENT_ID, "is past the end of the event log")


@contextlib.asynccontextmanager
async def _while_permitted(request: web.Request, client: Client) -> AsyncIterator[None]:
    """Check the caller's access again every `LINKFLOW_SSE_ACCESS_CHECK_S` while the stream is
    open, and cut it off (reason `access`) once it is gone: a token that expired, a member
    removed or demoted below viewer, a revoked API key. The client's reconnection then gets the
    401 or 404 any request would."""
    every = container(request).settings.sse_access_check_s
    hub = request.app[HUB]

    async def watch() -> None:
        while True:
            await asyncio.sleep(every)
            if not await still_permitted(request, Action.READ, query_token=True):
                metrics.SSE_ACCESS_CHECKS.labels("lost").inc()
                hub.cut(client, "access")
                return
            metrics.SSE_ACCESS_CHECKS.labels("kept").inc()

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def _open(request: web.Request, client: Client) -> Stream:
    """Send the headers; from here on the stream has no request deadline."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    lift_deadline(request)
    return Stream(request.app[HUB], client, response)


# ---------------------------------------------------------------- one execution's events


async def _is_execution_of(
    pool: DictPool, store: EventStore, workspace_id: UUID, execution_id: UUID
) -> bool:
    """Whether the event store holds an execution with this id in the workspace (its first
    event, `ExecutionStarted`, says whose it is): one query on the loop, so an execution started
    a moment ago is found before any projection has it."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT originator_version, topic, state FROM {}"
                " WHERE originator_id = %s AND originator_version = 1"
            ).format(_EVENTS),
            (execution_id,),
        )
        row = await cur.fetchone()
    if row is None or row["topic"] != STARTED_TOPIC:
        return False
    first = LoggedEvent(0, execution_id, 1, row["topic"], bytes(row["state"]))
    workspace, _ = event_message(store, first)
    return bool(workspace == str(workspace_id))


async def _closed_by(pool: DictPool, execution_id: UUID, position: int) -> bool:
    """Whether the execution's closing event is at or before `position`."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT 1 FROM {} WHERE originator_id = %s AND notification_id <= %s"
                " AND topic = ANY(%s) LIMIT 1"
            ).format(_EVENTS),
            (execution_id, position, sorted(CLOSING_TOPICS)),
        )
        return await cur.fetchone() is not None


async def _events_after(conn: DictConnection, execution_id: UUID, after: int) -> list[LoggedEvent]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT notification_id, originator_version, topic, state FROM {}"
            " WHERE originator_id = %s AND notification_id > %s"
            " ORDER BY originator_version LIMIT %s"
        ).format(_EVENTS),
        (execution_id, after, HISTORY_PAGE),
    )
    return [
        LoggedEvent(
            row["notification_id"],
            execution_id,
            row["originator_version"],
            row["topic"],
            bytes(row["state"]),
        )
        for row in await cur.fetchall()
    ]


async def _stream_execution(
    stream: Stream, store: EventStore, pool: DictPool, ws: UUID, execution_id: UUID, after: int
) -> None:
    """The recorded events past `after`, then the live ones, until the closing event."""
    sent = after
    while True:
        async with pool.connection() as conn:
            events = await _events_after(conn, execution_id, sent)
        for e in events:
            workspace, message = event_message(store, e)
            if workspace != str(ws):
                return  # never another workspace's events (the lookup already checked)
            await stream.send(message)
            sent = e.position
            if message.closing:
                return
        if len(events) < HISTORY_PAGE:
            break
    await stream.relay(sent)


async def execution_events(request: web.Request) -> web.StreamResponse:
    ws = await workspace_access(request, Action.READ, query_token=True)
    execution_id = parse_uuid(request.match_info["id"], "execution")
    after = last_event_id(request)
    c = container(request)
    if not await _is_execution_of(c.pool, c.store, ws, execution_id):
        raise ApiError(404, "not_found", "execution not found")
    if after is not None:
        await _not_past_head(c.pool, after)
        if await _closed_by(c.pool, execution_id, after):
            return web.Response(status=204)
    async with (
        request.app[HUB].follow_execution(request, ws, execution_id) as client,
        _while_permitted(request, client),
    ):
        stream = await _open(request, client)
        with contextlib.suppress(Disconnected):
            await stream.write(OPENED)
            await _stream_execution(stream, c.store, c.pool, ws, execution_id, after or 0)
    return stream.response


# ---------------------------------------------------------------- the live feed


def _changes_statement(ws: UUID, after: int, where: Expr | None) -> tuple[sql.Composed, list[Any]]:
    conditions: list[sql.Composable] = [sql.SQL("workspace_id = %s AND status_position > %s")]
    params: list[Any] = [ws, after]
    if where is not None:
        condition, values = where_sql(where)
        conditions.append(condition)
        params += values
    statement = sql.SQL(
        "SELECT * FROM rm_executions WHERE {} ORDER BY status_position LIMIT %s"
    ).format(sql.SQL(" AND ").join(conditions))
    return statement, [*params, PAGE]


async def _stream_changes(
    stream: Stream, pool: DictPool, ws: UUID, where: Expr | None, start: int, after: int | None
) -> None:
    """After `Last-Event-ID` (once the projector has reached `start`, where the hub's offers
    begin): the matching rows changed since, then the live changes past what was sent."""
    sent = start
    if after is not None:
        await stream.wait(stream.hub.projected(start))
        sent = after
        while True:
            statement, params = _changes_statement(ws, sent, where)
            async with pool.connection() as conn:
                cur = await conn.execute(statement, params)
                rows = await cur.fetchall()
            for row in rows:
                await stream.send(change_message(row))
                sent = row["status_position"]
            if len(rows) < PAGE:
                break
    await stream.relay(sent)


async def live_executions(request: web.Request) -> web.StreamResponse:
    ws = await workspace_access(request, Action.READ, query_token=True)
    where = parsed_query(request.query.get("q", "")).where
    after = last_event_id(request)
    c = container(request)
    if after is not None:
        await _not_past_head(c.pool, after)
    async with (
        request.app[HUB].follow_live(request, ws, where) as (client, start),
        _while_permitted(request, client),
    ):
        stream = await _open(request, client)
        with contextlib.suppress(Disconnected):
            await stream.write(OPENED)
            await _stream_changes(stream, c.pool, ws, where, start, after)
    return stream.response


# ---------------------------------------------------------------- the route table

_SSE_PARAMS = (
    Param(
        LAST_EVENT_ID,
        {"type": "string", "pattern": "^[0-9]+$"},
        "resume after this event id (a position; browsers send it when they reconnect)",
        location="header",
    ),
    Param(
        "access_token",
        {"type": "string"},
        "the bearer token, for clients that cannot send an Authorization header (EventSource)",
    ),
)
_SSE_ERRORS = {
    422: f"invalid_request: {LAST_EVENT_ID} is not a position, or is past the end of the log",
    503: "too_many_streams: LINKFLOW_SSE_MAX_STREAMS streams are open here (Retry-After)",
}

ROUTES: list[Route] = [
    Route(
        "GET",
        WS + "/executions/live",
        live_executions,
        "SSE (text/event-stream): `event: execution` with the list item each time a matching"
        " execution changes status; `id:` the position of the change",
        params=(
            Param("q", {"type": "string", "maxLength": MAX_QUERY_LENGTH}, Q_DESCRIPTION),
            *_SSE_PARAMS,
        ),
        extra_responses=_SSE_ERRORS
        | {422: _SSE_ERRORS[422] + "; invalid_query: details [{path: 'q', message, position}]"},
        tag="executions",
    ),
    Route(
        "GET",
        WS + "/executions/{id}/events",
        execution_events,
        "SSE (text/event-stream): the execution's events (`id:` position, `event:` type, `data:`"
        " {position, version, type, recorded_at, data}), recorded then live, ending after the"
        " closing event; 204 when Last-Event-ID is at or past the closing event",
        params=_SSE_PARAMS,
        extra_responses=_SSE_ERRORS,
        tag="executions",
    ),
]
