"""`GET …/executions/export`: every execution the list's filters match (not one page), streamed
as NDJSON or CSV (`projections.export`) with a chunked `web.StreamResponse`.

- Before the first byte, everything is checked and answered like any request (JSON errors):
  401/404 for the caller, 422 for `q`, `format` and the list's other filters, 429
  `too_many_exports` past `LINKFLOW_MAX_EXPORTS` exports streaming in this process (each
  holds a PostgreSQL connection for its duration), and the first chunk is read from
  PostgreSQL before the status line is sent. The request deadline holds until then; after it,
  an export runs as long as its client reads (`deadline.lift_deadline`).
- Each chunk (up to 1,000 rows, ~256 KB) is one awaited write, so a slow client holds the cursor
  back instead of making the process buffer the export; a client that accepts no chunk for
  `LINKFLOW_EXPORT_STALL_S` has its export ended. A client that goes away ends the cursor and
  its transaction, and gives the connection back to the pool.
- How a client knows it has everything: the chunked body ends with its terminating chunk
  only when the export is complete. An error in the middle (PostgreSQL lost, a stalled
  client, the server stopping) closes the connection without it, which HTTP clients report as
  a truncated body (aiohttp `ClientPayloadError`, curl exit 18); nothing is appended to the
  data, so a complete export is exactly its rows. (An HTTP/1.0 client, which chunked encoding
  does not serve, gets a body ended by closing and cannot tell.)

`ROUTES` is registered by `gateways.http.app` (before `routes_executions`, so that
`/executions/export` is not read as an execution id). Imported by `gateways.http.app`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from domain.roles import Action
from gateways.http import routes_executions
from gateways.http.auth import workspace_access
from gateways.http.consistency import read_your_writes
from gateways.http.context import container
from gateways.http.deadline import lift_deadline
from gateways.http.errors import ApiError
from gateways.http.routing import Param, Route
from infra import metrics
from infra.logging import get_logger
from projections.export import MEDIA_TYPES, Chunk, Format, export_chunks

log = get_logger(__name__)

PATH = routes_executions.WS + "/executions/export"
RETRY_AFTER_S = 5


class ExportSlots:
    """How many exports this process streams, at most `limit` at once (one event loop: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextmanager
    def taken(self, fmt: Format) -> Iterator[None]:
        """One slot for the duration; 429 `too_many_exports` with Retry-After when none is free."""
        if self.active >= self.limit:
            metrics.EXPORTS.labels(fmt, "refused").inc()
            raise ApiError(
                429,
                "too_many_exports",
                f"{self.limit} exports are streaming from this server; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


EXPORT_SLOTS: web.AppKey[ExportSlots] = web.AppKey("linkflow_export_slots", ExportSlots)


def _format(request: web.Request, problems: list[dict[str, str]]) -> Format:
    raw = request.query.get("format") or Format.NDJSON
    try:
        return Format(raw)
    except ValueError:
        choices = ", ".join(Format)
        problems.append({"path": "format", "message": f"must be one of {choices}"})
        return Format.NDJSON


async def _begin(request: web.Request, ws: UUID, fmt: Format) -> web.StreamResponse:
    """Send the status line and headers; from now on no deadline cuts the export."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Disposition": f'attachment; filename="executions-{ws}-{stamp}.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    response.content_type, response.charset = MEDIA_TYPES[fmt]
    await response.prepare(request)  # no length: chunked (HTTP/1.0: ended by closing)
    lift_deadline(request)
    return response


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    fmt: Format,
    first: Chunk,
    chunks: AsyncIterator[Chunk],
) -> None:
    """Write every chunk, then the end of the body, and count how the export ended. Past the
    first byte an error can only end the stream: the connection is closed without the
    terminating chunk."""
    stall_s = container(request).settings.export_stall_s

    async def write(chunk: Chunk) -> None:
        data, rows = chunk
        async with asyncio.timeout(stall_s):
            await response.write(data)
        metrics.EXPORTED_ROWS.labels(fmt).inc(rows)

    outcome = "failed"
    try:
        await write(first)
        async for chunk in chunks:
            await write(chunk)
        await response.write_eof()
        outcome = "completed"
    except ConnectionError:  # the client went away (aiohttp's ClientConnectionResetError)
        outcome = "client_gone"
    except asyncio.CancelledError:  # the server stopping (or a client gone, if that cancels)
        _abort(request)
        outcome = "cancelled"
        raise
    except TimeoutError:
        _abort(request)
        outcome = "stalled"
    except Exception:
        log.exception("export_failed", extra={"fields": {"format": str(fmt)}})
        _abort(request)
    finally:
        metrics.EXPORTS.labels(fmt, outcome).inc()


def _abort(request: web.Request) -> None:
    """Close the connection after what was written, without the chunked body's end."""
    if request.transport is not None:
        request.transport.close()


async def export_executions(request: web.Request) -> web.StreamResponse:
    ws = await workspace_access(request, Action.READ)
    problems: list[dict[str, str]] = []
    fmt = _format(request, problems)
    filters = routes_executions.matching_filters(request, problems)
    await read_your_writes(request)
    with request.app[EXPORT_SLOTS].taken(fmt):
        async with container(request).pool.connection() as conn:
            async with aclosing(export_chunks(conn, ws, fmt, **filters)) as chunks:
                first = await anext(chunks)  # a failure so far is an ordinary answer
                response = await _begin(request, ws, fmt)
                await _stream(request, response, fmt, first, chunks)
    return response


def _list_params() -> tuple[Param, ...]:
    """The list's parameters that choose executions (not its paging)."""
    listed = next(
        r for r in routes_executions.ROUTES if r.method == "GET" and r.path.endswith("/executions")
    )
    return tuple(p for p in listed.params if p.name not in ("limit", "cursor"))


ROUTES: list[Route] = [
    Route(
        "GET",
        PATH,
        export_executions,
        "Every matching execution (not one page), streamed: one line per execution with the"
        " list item's fields, in the order of q. NDJSON (application/x-ndjson) or CSV (text/csv,"
        " a header row; NULL empty, jsonb fields as JSON text, text cells starting with = + - @"
        " tab CR or ' prefixed with '). Complete only if the chunked body ends normally.",
        params=(
            Param(
                "format",
                {"type": "string", "enum": list(Format), "default": Format.NDJSON.value},
            ),
            *_list_params(),
        ),
        extra_responses={
            422: "invalid_request (format, status, workflow_id, started_after, started_before)"
            " / invalid_query (q)",
            429: "too_many_exports: LINKFLOW_MAX_EXPORTS exports are streaming (Retry-After)",
        },
        tag="executions",
    ),
]
