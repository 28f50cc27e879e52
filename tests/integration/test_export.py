"""`GET …/executions/export` (issue 14, item 5) on the real PostgreSQL, through the HTTP API
served as the gateway serves it: every match, beyond one page, in the order of `q`, reading
back as NDJSON and as CSV (the `csv` module) to exactly the list's items; 422 for `q`/`format`
and 401/404 before any byte; tenancy; the per-process cap (429); and the streaming itself — a
client that goes away, stalls or outlasts the request deadline, a failure mid-stream ending the
body abnormally, and memory that does not grow with the export.

Executions come from the projector (`project`, with names and inputs a spreadsheet would run)
and, in bulk, from one INSERT … SELECT of the columns the projector writes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest
from aiohttp import web
from api import Api
from databases import own_database
from exports import parse_csv, parse_ndjson
from processes import free_port
from prometheus_client import REGISTRY
from stack import eventually

from domain.definition import parse_definition
from domain.execution import Execution
from gateways.bootstrap import Container, bootstrap
from gateways.http.app import make_app
from gateways.http.routes_export import EXPORT_SLOTS
from projections import export
from projections.visibility import project

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
SEEDED = 120  # more than two pages of the list (50 by default)
NASTY_NAMES = ['=HYPERLINK("http://evil","x")', "+1", "-2+3", "@SUM(A1)", "'quoted", 'a,"b"\nc']
BIG = 30_000  # rows of ~1 KB: far more than the socket buffers hold
BIG_INPUT_BYTES = 1000


@dataclass
class Served:
    api: Api
    container: Container
    app: web.Application

    def url(self, workspace: str | None = None) -> str:
        return f"{self.api.base}/api/v1/workspaces/{workspace or self.api.workspace}/executions"

    def headers(self, token: str | None = None) -> dict[str, str]:
        """The caller's Authorization (`token` "": none)."""
        token = self.api.token if token is None else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def connections_in_use(self) -> int:
        stats = self.container.pool.get_stats()
        return int(stats.get("pool_size", 0)) - int(stats.get("pool_available", 0))

    def exports_streaming(self) -> int:
        return self.app[EXPORT_SLOTS].active


@asynccontextmanager
async def serving(redis_url: str, **overrides: Any) -> AsyncIterator[Served]:
    """The gateway's application served as `linkflow run gateway` serves it (an AppRunner: a
    client's going away does not cancel its handler, unlike aiohttp's TestServer), on a
    database of its own, and a signed-up client."""
    with own_database(redis_url, **overrides) as settings:
        container = await bootstrap(settings)
        app = make_app(container)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            timeout = aiohttp.ClientTimeout(total=60, sock_read=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                api = Api(f"http://127.0.0.1:{port}", session)
                await api.sign_up()
                yield Served(api, container, app)
        finally:
            await runner.cleanup()
            await container.close()


def _execution(workspace: UUID, name: str, at: datetime, closes: bool, input: Any) -> Execution:
    raw = {"name": name, "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}]}
    ex = Execution.start(
        uuid4(), str(workspace), str(uuid4()), 1, parse_definition(raw).to_json(), input, at
    )
    if closes:
        ex.complete_node("t", 1, {"formula": "=cmd()", "n": -1}, at + timedelta(seconds=2))
    return ex


async def _project(served: Served, executions: list[Execution]) -> None:
    async with served.container.pool.connection() as conn:
        async with conn.transaction():
            events = [e for ex in executions for e in ex.collect_events()]
            await project(conn, [(None, e) for e in events])


SEED = """
INSERT INTO rm_executions (id, workspace_id, workflow_id, workflow_name, version, status,
                           trigger, input, output, error, started_at, closed_at, event_version)
SELECT gen_random_uuid(), %(ws)s, md5(%(ws)s::text || i %% 20)::uuid, 'workflow-' || i %% 20,
       1 + i %% 3, status, (ARRAY['manual', 'webhook', 'schedule'])[1 + i %% 3],
       jsonb_build_object('order', i, 'pad', repeat('x', %(pad)s)),
       CASE status WHEN 'completed' THEN jsonb_build_object('total', i %% 1000) END,
       CASE status WHEN 'failed' THEN '{"type": "http_status", "node_id": "call"}'::jsonb
                   WHEN 'running' THEN NULL
                   ELSE jsonb_build_object('type', status) END,
       %(t0)s + i * interval '1 second',
       CASE WHEN status <> 'running' THEN %(t0)s + i * interval '1 second'
                                          + (i * 37 %% 5000) * interval '1 millisecond' END,
       8
  FROM generate_series(0, %(count)s - 1) AS i,
       LATERAL (SELECT (ARRAY['completed', 'completed', 'failed', 'running', 'canceled',
                              'timed_out'])[1 + i %% 6] AS status) AS s
"""


async def _seed(served: Served, workspace: UUID, count: int, input_bytes: int = 0) -> None:
    """`count` executions of the workspace, in one statement, in the columns the projector
    writes (PostgreSQL derives the generated ones): varied workflows, statuses, durations."""
    async with served.container.pool.connection() as conn:
        params = {"ws": workspace, "count": count, "pad": input_bytes, "t0": T0}
        await conn.execute(SEED, params)
        await conn.commit()


async def _count(served: Served, condition: str) -> int:
    async with served.container.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT count(*) AS n FROM rm_executions WHERE workspace_id = %s AND {condition}",
            (served.api.workspace,),
        )
        row = await cur.fetchone()
        await conn.commit()
    assert row is not None
    return int(row["n"])


@pytest.fixture(scope="module")
async def small(redis_url: str) -> AsyncIterator[Served]:
    """A workspace with SEEDED bulk executions and some projected ones whose names and inputs
    a spreadsheet would run; another workspace with executions of its own."""
    async with serving(redis_url) as served:
        ws = UUID(served.api.workspace)
        await _seed(served, ws, SEEDED)
        projected = [
            _execution(ws, name, T0 + timedelta(minutes=i), i % 2 == 0, {"cell": name, "i": i})
            for i, name in enumerate(NASTY_NAMES)
        ]
        projected.append(_execution(ws, "scalar input", T0, True, "=1+1"))
        await _project(served, projected)
        await _seed(served, uuid4(), 30)
        await _project(served, [_execution(uuid4(), "=other", T0, True, {})])
        yield served


async def listed(served: Served, **params: str) -> list[dict[str, Any]]:
    """Every item of the list, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page: dict[str, Any] = {**params, **({"cursor": cursor} if cursor else {})}
        reply = await served.api.call("GET", served.api.ws("/executions"), **page)
        assert reply.status == 200, reply.body
        items += reply.body["items"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return items


async def exported(
    served: Served, token: str | None = None, workspace: str | None = None, **params: str
) -> tuple[int, Any, bytes]:
    """Status, headers and the whole body of an export."""
    async with served.api.session.get(
        served.url(workspace) + "/export", params=params, headers=served.headers(token)
    ) as resp:
        return resp.status, resp.headers, await resp.read()


QUERIES = [
    {},
    {"q": "ORDER BY duration_ms ASC"},
    {"q": "status IN ('failed', 'canceled') ORDER BY closed_at DESC"},
    {"q": "workflow_name STARTS_WITH 'workflow-1' ORDER BY started_at ASC", "status": "completed"},
    {"q": "closed_at IS NULL", "started_after": "2026-11-01T00:00:30Z"},
]


@pytest.mark.parametrize("params", QUERIES)
async def test_every_match_is_exported_in_the_lists_order(
    small: Served, params: dict[str, str]
) -> None:
    items = await listed(small, **params)
    status, headers, body = await exported(small, **params)
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-ndjson"
    assert parse_ndjson(body) == items

    status, headers, body = await exported(small, format="csv", **params)
    assert status == 200, body
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    header, rows = parse_csv(body)
    assert header == list(export.item_fields()) == list(items[0])
    assert rows == items
    if not params:  # every execution of the workspace: beyond one page, no other's
        assert len(items) == SEEDED + len(NASTY_NAMES) + 1


async def test_an_export_is_a_chunked_attachment(small: Served) -> None:
    status, headers, body = await exported(small, format="csv")
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Cache-Control"] == "no-store"
    disposition = re.fullmatch(
        rf'attachment; filename="executions-{small.api.workspace}-(\d{{8}}T\d{{6}}Z)\.csv"',
        headers["Content-Disposition"],
    )
    assert disposition is not None, headers["Content-Disposition"]
    names = {record[2] for record in csv.reader(io.StringIO(body.decode(), newline=""))}
    assert "'" + NASTY_NAMES[0] in names and NASTY_NAMES[0] not in names  # neutralised
    _, headers, _ = await exported(small, format="ndjson")
    assert headers["Content-Disposition"].endswith('.ndjson"')


async def test_nothing_matching_is_an_empty_body_or_a_header(small: Served) -> None:
    status, _, body = await exported(small, q="version = 99")
    assert (status, body) == (200, b"")
    status, _, body = await exported(small, q="version = 99", format="csv")
    assert status == 200
    assert parse_csv(body) == (list(export.item_fields()), [])


async def test_bad_parameters_are_422_before_any_byte(small: Served) -> None:
    status, headers, body = await exported(small, format="xlsx")
    assert status == 422 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == {
        "code": "invalid_request",
        "message": "the request is invalid",
        "details": [{"path": "format", "message": "must be one of ndjson, csv"}],
    }
    reply = await small.api.call(
        "GET", small.api.ws("/executions/export"), status="weird", format="xlsx"
    )
    assert reply.status == 422
    assert [d["path"] for d in reply.body["error"]["details"]] == ["status", "format"]
    reply = await small.api.call(
        "GET", small.api.ws("/executions/export"), q="status = 'failed' AND colour = 1"
    )
    assert reply.status == 422 and reply.body["error"]["code"] == "invalid_query"
    [detail] = reply.body["error"]["details"]
    assert (detail["path"], detail["position"]) == ("q", 22)


async def test_only_the_workspaces_members_export_it(small: Served) -> None:
    status, headers, _ = await exported(small, token="")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = await exported(small, token="not-a-token")
    assert status == 401
    async with aiohttp.ClientSession() as session:
        stranger = Api(small.api.base, session)
        await stranger.sign_up()
        status, _, body = await exported(small, token=stranger.token)
        assert status == 404, body  # not theirs: its existence is not revealed
        status, _, body = await exported(small, token=stranger.token, workspace=stranger.workspace)
        assert (status, body) == (200, b"")  # their own workspace has nothing of ours
    created = await small.api.call(
        "POST", small.api.ws("/api-keys"), json={"name": "analyst", "role": "viewer"}
    )
    assert created.status == 201, created.body
    status, _, viewed = await exported(small, token=created.body["key"])
    assert status == 200
    _, _, owned = await exported(small)
    assert viewed == owned
    others = {item["workflow_name"] for item in parse_ndjson(owned)}
    assert "=other" not in others and len(others) == 20 + len(NASTY_NAMES) + 1


async def test_the_export_is_documented_in_openapi(small: Served) -> None:
    reply = await small.api.call("GET", "/api/v1/openapi.json", token="")
    operation = reply.body["paths"]["/api/v1/workspaces/{ws}/executions/export"]["get"]
    names = [p["name"] for p in operation["parameters"]]
    assert names[:2] == ["ws", "format"]
    assert {"q", "status", "workflow_id", "started_after", "started_before"} <= set(names)
    assert {"limit", "cursor"}.isdisjoint(names)
    assert {"422", "429"} <= set(operation["responses"])


# ---------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
async def big(redis_url: str) -> AsyncIterator[Served]:
    """BIG executions of ~1 KB: an export far larger than what sockets buffer. One export at a
    time per process, and a short request deadline."""
    async with serving(redis_url, max_exports=1, request_deadline_s=2.0) as served:
        await _seed(served, UUID(served.api.workspace), BIG, input_bytes=BIG_INPUT_BYTES)
        yield served


def _outcomes(outcome: str) -> float:
    labels = {"format": "ndjson", "outcome": outcome}
    return REGISTRY.get_sample_value("linkflow_exports_total", labels) or 0.0


async def _released(served: Served) -> bool:
    return served.connections_in_use() == 0 and served.exports_streaming() == 0


async def test_exports_past_the_cap_are_429_until_one_ends(big: Served) -> None:
    session = big.api.session
    async with session.get(big.url() + "/export", headers=big.headers()) as first:
        assert first.status == 200  # streaming, its client not reading yet
        status, headers, body = await exported(big, format="csv")
        assert status == 429
        assert headers["Retry-After"] == "5"
        assert json.loads(body)["error"]["code"] == "too_many_exports"
        assert len(parse_ndjson(await first.read())) == BIG
    await eventually(lambda: _released(big))
    status, _, body = await exported(big, q="status = 'failed'")
    assert status == 200
    assert len(parse_ndjson(body)) == await _count(big, "status = 'failed'") > 0


async def test_a_client_that_goes_away_gives_the_connection_back(big: Served) -> None:
    gone = _outcomes("client_gone")
    async with big.api.session.get(big.url() + "/export", headers=big.headers()) as resp:
        assert resp.status == 200
        await resp.content.readexactly(100_000)
        assert big.connections_in_use() == 1 and big.exports_streaming() == 1
        resp.close()  # drops the connection mid-export
    await eventually(lambda: _released(big))
    assert _outcomes("client_gone") == gone + 1
    status, _, _ = await exported(big, q="version = 1")  # the slot is free again
    assert status == 200


async def test_a_failure_mid_stream_ends_the_body_without_its_end(big: Served) -> None:
    failed = _outcomes("failed")
    async with big.api.session.get(big.url() + "/export", headers=big.headers()) as resp:
        assert resp.status == 200
        received = await resp.content.readexactly(100_000)
        async with big.container.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE %s",
                (f"%{export.CURSOR_NAME}%",),
            )
            assert [row["ended"] for row in await cur.fetchall()] == [True]
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    assert 0 < received.count(b"\n") < BIG  # what was sent is whole lines, but not all
    assert received.endswith(b"\n")
    await eventually(lambda: _released(big))
    assert _outcomes("failed") == failed + 1


async def test_an_export_outlasts_the_request_deadline(big: Served) -> None:
    """Its client reads slower than the 2 s request deadline: the export still completes."""
    async with big.api.session.get(big.url() + "/export", headers=big.headers()) as resp:
        assert resp.status == 200
        body = await resp.content.readexactly(100_000)
        # The slow client itself (not a wait for something): it reads on after the deadline.
        await asyncio.sleep(big.container.settings.request_deadline_s + 0.5)
        body += await resp.read()
    assert len(parse_ndjson(body)) == BIG


async def _peak_while_exporting(served: Served, **params: str) -> tuple[int, int, int]:
    """The peak of Python allocations (the server's and the client's) while one export
    streams to a client that counts it; its rows (CSV) and bytes."""
    tracemalloc.start()
    try:
        size = lines = 0
        async with served.api.session.get(
            served.url() + "/export", params={"format": "csv", **params}, headers=served.headers()
        ) as resp:
            tracemalloc.reset_peak()
            async for data in resp.content.iter_chunked(64 * 1024):
                size += len(data)
                lines += data.count(b"\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, lines - 1, size


async def test_memory_does_not_grow_with_the_export(big: Served) -> None:
    """Streaming three times the rows takes no more memory: the peak is a chunk's worth, a
    small fraction of the export."""
    peak, rows, size = await _peak_while_exporting(big)
    third_peak, third_rows, _ = await _peak_while_exporting(big, q="version = 1")
    assert (rows, third_rows) == (BIG, BIG // 3) and size > BIG * BIG_INPUT_BYTES
    assert peak < size / 10
    assert peak < 1.5 * third_peak


# ---------------------------------------------------------------- a stalled client


async def test_a_client_that_stops_reading_is_cut_off(redis_url: str) -> None:
    async with serving(redis_url, export_stall_s=0.5) as served:
        await _seed(served, UUID(served.api.workspace), BIG, input_bytes=BIG_INPUT_BYTES)
        stalled = _outcomes("stalled")
        async with served.api.session.get(served.url() + "/export", headers=served.headers()) as r:
            assert r.status == 200
            await eventually(lambda: _released(served), timeout=10)
            assert _outcomes("stalled") == stalled + 1
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
