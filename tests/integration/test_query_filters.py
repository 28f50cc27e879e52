"""The `q` filter language of `GET …/executions` on the real PostgreSQL (issue 14, item 2):
executions projected with known times and outcomes, then listed through
`queries.list_executions` — results, each ORDER BY with its NULLs last, keyset pagination in
every order, the AND with the older parameters, the indexes the common filters use — and
through the HTTP API: the 422 `invalid_query` body, the new columns of a list item, and a
rebuild of the read models giving the same rows. Also migration 011 on rows projected before it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from api import Api
from psycopg import sql
from psycopg.types.json import Jsonb
from stack import eventually, roles

from domain.definition import parse_definition
from domain.execution import Execution
from gateways.roles import rebuild_read_models
from infra.schema import MIGRATIONS, create_database, drop_database
from infra.settings import Settings
from projections import queries
from projections.query_language import parse
from projections.visibility import project

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HTTP_500 = {"type": "http_status", "message": "HTTP 500"}


def _definition(name: str) -> dict[str, Any]:
    """One HTTP call that fails the execution when it fails (no retry)."""
    raw = {
        "name": name,
        "nodes": [{"id": "call", "type": "http_request", "config": {"url": "http://h"}}],
    }
    return parse_definition(raw).to_json()


@dataclass
class Run:
    """One projected execution and what the filters should see of it."""

    id: UUID
    name: str
    status: str
    started_at: datetime
    duration_ms: int | None
    closed_at: datetime | None


class Workspace:
    """Executions of one fresh workspace, built from domain commands at chosen times."""

    def __init__(self) -> None:
        self.id = uuid4()
        self.workflows = {name: uuid4() for name in ("billing-daily", "billing_x", "reports")}
        self.executions: list[Execution] = []
        self.runs: list[Run] = []

    def run(
        self,
        name: str,
        start_s: int,
        outcome: str,
        took_ms: int = 0,
        *,
        version: int = 1,
        trigger: str = "manual",
    ) -> None:
        started = T0 + timedelta(seconds=start_s)
        closed = started + timedelta(milliseconds=took_ms)
        ex = Execution.start(
            uuid4(),
            str(self.id),
            str(self.workflows[name]),
            version,
            _definition(name),
            {},
            started,
            trigger=trigger,
        )
        if outcome == "completed":
            ex.complete_node("call", 1, {"ok": True}, closed)
        elif outcome == "failed":
            ex.fail_node("call", 1, HTTP_500, closed)
        elif outcome == "canceled":
            ex.cancel("enough", closed)
        self.executions.append(ex)
        running = outcome == "running"
        self.runs.append(
            Run(
                ex.id,
                name,
                outcome,
                started,
                None if running else took_ms,
                None if running else closed,
            )
        )


def scenario() -> Workspace:
    ws = Workspace()
    ws.run("billing-daily", 0, "completed", 1000)
    ws.run("billing-daily", 60, "failed", 5000)
    ws.run("reports", 120, "running", trigger="webhook")
    ws.run("reports", 180, "canceled", 2000, version=2)
    ws.run("billing_x", 240, "failed", 1000, trigger="schedule")
    ws.run("reports", 300, "completed", 1000)  # the same duration as two others
    ws.run("billing-daily", 300, "running")  # the same start as the one before
    return ws


@pytest.fixture(scope="module")
async def projected(settings: Settings) -> AsyncIterator[tuple[Workspace, Any]]:
    ws = scenario()
    async with roles(settings) as r:
        async with r.container.pool.connection() as conn:
            async with conn.transaction():
                events = [e for ex in ws.executions for e in ex.collect_events()]
                await project(conn, [(None, e) for e in events])
        yield ws, r.container


async def listed(c: Any, ws: Workspace, q: str = "", **filters: Any) -> list[UUID]:
    async with c.pool.connection() as conn:
        page = await queries.list_executions(conn, ws.id, q=parse(q), **filters)
        await conn.commit()
    return [UUID(item["id"]) for item in page["items"]]


def ids(ws: Workspace, *positions: int) -> list[UUID]:
    return [ws.runs[i].id for i in positions]


def newest_first(ws: Workspace, runs: list[Run]) -> list[UUID]:
    return [r.id for r in sorted(runs, key=lambda r: (r.started_at, r.id), reverse=True)]


async def test_filters_select_the_matching_executions(projected: tuple[Workspace, Any]) -> None:
    ws, c = projected
    runs = ws.runs
    expectations = {
        "status = 'failed'": [r for r in runs if r.status == "failed"],
        "status IN ('canceled', 'failed')": [r for r in runs if r.status in ("canceled", "failed")],
        "NOT status = 'completed'": [r for r in runs if r.status != "completed"],
        "workflow_name = 'reports'": [r for r in runs if r.name == "reports"],
        # `_` in a prefix is no wildcard: billing_x only.
        "workflow_name STARTS_WITH 'billing_'": [r for r in runs if r.name == "billing_x"],
        "workflow_name STARTS_WITH 'billing'": [r for r in runs if r.name.startswith("billing")],
        f"workflow_id = '{ws.workflows['reports']}'": [r for r in runs if r.name == "reports"],
        "version = 2": [runs[3]],
        "trigger = 'webhook' OR trigger = 'schedule'": [runs[2], runs[4]],
        "closed_at IS NULL": [r for r in runs if r.closed_at is None],
        "duration_ms >= 2000": [r for r in runs if (r.duration_ms or 0) >= 2000],
        "duration_ms BETWEEN 1000 AND 2000 AND NOT error_code IS NOT NULL": [runs[0], runs[5]],
        "error_code = 'http_status' AND failed_node = 'call'": [runs[1], runs[4]],
        "error_code = 'canceled'": [runs[3]],
        "started_at > '2026-11-02T08:02:00Z'": [r for r in runs if r.started_at > T0 + 2 * MINUTE],
        "closed_at < '2026-11-02T10:01:01+02:00'": [runs[0]],
        "workflow_name = 'x'' OR 1=1 --'": [],
    }  # fmt: skip
    for q, expected in expectations.items():
        assert await listed(c, ws, q) == newest_first(ws, expected), q


async def test_q_combines_with_the_other_parameters_by_and(
    projected: tuple[Workspace, Any],
) -> None:
    ws, c = projected
    assert await listed(c, ws, "workflow_name = 'reports'", status="running") == ids(ws, 2)
    assert await listed(c, ws, "status = 'failed'", workflow_id=ws.workflows["reports"]) == []
    after = T0 + timedelta(seconds=30)
    assert await listed(c, ws, "status = 'failed'", started_after=after) == ids(ws, 4, 1)
    assert await listed(c, ws, "", started_before=after) == ids(ws, 0)


def expected_order(ws: Workspace, field: str, descending: bool) -> list[UUID]:
    """NULLs last either way; ties by id in the same direction as the field."""
    valued = [r for r in ws.runs if getattr(r, field) is not None]
    empty = [r for r in ws.runs if getattr(r, field) is None]
    valued.sort(key=lambda r: (getattr(r, field), r.id), reverse=descending)
    empty.sort(key=lambda r: r.id, reverse=descending)
    return [r.id for r in valued + empty]


@pytest.mark.parametrize("field", ["started_at", "closed_at", "duration_ms"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
@pytest.mark.parametrize("limit", [1, 2, 3, 50])
async def test_every_order_pages_through_every_row_once(
    projected: tuple[Workspace, Any], field: str, direction: str, limit: int
) -> None:
    ws, c = projected
    query = parse(f"ORDER BY {field} {direction}")
    seen: list[UUID] = []
    cursor: str | None = None
    async with c.pool.connection() as conn:
        for _ in range(len(ws.runs) + 1):
            decoded = queries.decode_cursor(cursor) if cursor else None
            page = await queries.list_executions(conn, ws.id, q=query, limit=limit, cursor=decoded)
            seen += [UUID(item["id"]) for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        await conn.commit()
    assert seen == expected_order(ws, field, direction == "DESC")


async def test_a_cursor_of_another_order_is_refused(projected: tuple[Workspace, Any]) -> None:
    ws, c = projected
    async with c.pool.connection() as conn:
        page = await queries.list_executions(conn, ws.id, limit=1)
        cursor = queries.decode_cursor(page["next_cursor"])
        with pytest.raises(ValueError, match="another order"):
            await queries.list_executions(conn, ws.id, q=parse("ORDER BY closed_at"), cursor=cursor)
        await conn.commit()


@pytest.mark.parametrize(
    ("q", "index"),
    [
        ("status = 'failed' AND started_at > '2026-11-01T00:00:00Z'", "rm_executions_ws_status"),
        ("workflow_name = 'reports'", "rm_executions_ws_name"),
        ("error_code = 'http_status'", "rm_executions_ws_error_code"),
        ("failed_node = 'call'", "rm_executions_ws_failed_node"),
    ],
)
async def test_common_filters_have_an_index(
    projected: tuple[Workspace, Any], q: str, index: str
) -> None:
    """The planner can answer each with its index (sequential scans off: on a table this small
    it would rightly scan instead)."""
    ws, c = projected
    statement, params = queries.list_statement(ws.id, q=parse(q))
    async with c.pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            cur = await conn.execute(sql.SQL("EXPLAIN {}").format(statement), params)
            plan = "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())
    assert index in plan, plan


# ---------------------------------------------------------------- over HTTP

PURE = {
    "name": "pure-query",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
}


async def test_a_malformed_filter_is_422_invalid_query_with_the_offset(api: Api) -> None:
    reply = await api.call("GET", api.ws("/executions"), q="status = 'failed' AND colour = 1")
    assert reply.status == 422
    [detail] = reply.body["error"]["details"]
    assert reply.body == {
        "error": {
            "code": "invalid_query",
            "message": "the filter q is invalid",
            "details": [{"path": "q", "message": detail["message"], "position": 22}],
        }
    }
    assert detail["message"].startswith("unknown field 'colour'; the known fields are status,")
    reply = await api.call("GET", api.ws("/executions"), q="attr.vip > true")
    assert reply.status == 422
    assert reply.body["error"]["details"] == [
        {
            "path": "q",
            "message": "> does not apply to attr.vip with a bool value; it takes = != IN IS NULL"
            " IS NOT NULL",
            "position": 11,
        }
    ]
    # The older parameters are checked first, as before.
    reply = await api.call("GET", api.ws("/executions"), q="nonsense", status="weird")
    assert (reply.status, reply.body["error"]["code"]) == (422, "invalid_request")


async def test_items_carry_the_new_fields_and_a_rebuild_gives_the_same_rows(
    api: Api, fresh_settings: Settings
) -> None:
    workflow = await api.create_workflow(PURE)
    started = [await api.start(workflow["id"], {"i": i}) for i in range(3)]
    at = max(s["position"] for s in started)
    path = api.ws("/executions")

    async def page(**params: Any) -> Any:
        reply = await api.call("GET", path, min_position=at, **params)
        assert reply.status == 200, reply.body
        return reply.body

    async with roles(fresh_settings, "relay", "projector"):
        q = "workflow_name = 'pure-query' AND closed_at IS NOT NULL ORDER BY duration_ms ASC"
        before = await eventually(lambda: _all_closed(page(q=q)))
        first = await page(q=q, limit=2)
        assert first["next_cursor"] is not None
        rest = await page(q=q, limit=2, cursor=first["next_cursor"])
        assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in before]
        wrong = await api.call("GET", path, limit=2, cursor=first["next_cursor"])
        assert (wrong.status, wrong.body["error"]["code"]) == (422, "invalid_cursor")
        assert "ORDER BY duration_ms ASC" in wrong.body["error"]["details"][0]["message"]
    for item in before:
        assert item["workflow_name"] == "pure-query"
        assert item["status"] == "completed"
        assert isinstance(item["duration_ms"], int) and item["duration_ms"] >= 0
    assert await rebuild_read_models(fresh_settings) is not None
    assert (await page(q=q))["items"] == before


async def _all_closed(pending: Any) -> list[dict[str, Any]] | None:
    body = await pending
    return body["items"] if len(body["items"]) == 3 else None


# ---------------------------------------------------------------- migration 011


def test_migration_011_fills_the_columns_of_rows_projected_before_it(redis_url: str) -> None:
    settings = Settings(pg_db=f"lf_test_{uuid.uuid4().hex[:10]}", redis_url=redis_url)
    create_database(settings)
    try:
        with psycopg.connect(settings.conninfo) as conn:
            for path in sorted(MIGRATIONS.glob("*.sql")):
                if path.name >= "011":
                    break
                conn.execute(path.read_text())
            ws, wf, ex = uuid4(), uuid4(), uuid4()
            conn.execute(
                "INSERT INTO rm_workflow_versions (workflow_id, version, workspace_id, name,"
                " definition, created_at) VALUES (%s, 2, %s, 'nightly', '{}', %s)",
                (wf, ws, T0),
            )
            conn.execute(
                "INSERT INTO rm_executions (id, workspace_id, workflow_id, version, status,"
                " trigger, error, started_at, closed_at, event_version)"
                " VALUES (%s, %s, %s, 2, 'failed', 'manual', %s, %s, %s, 5)",
                (
                    ex,
                    ws,
                    wf,
                    Jsonb(HTTP_500 | {"node_id": "call"}),
                    T0,
                    T0 + timedelta(seconds=1.5),
                ),
            )
            conn.execute((MIGRATIONS / "011_execution_query_columns.sql").read_text())
            row = conn.execute(
                "SELECT workflow_name, duration_ms, error_code, failed_node FROM rm_executions"
            ).fetchone()
        assert row == ("nightly", 1500, "http_status", "call")
    finally:
        drop_database(settings)
