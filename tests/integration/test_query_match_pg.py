"""`projections.query_match.matches` agrees with PostgreSQL running `where_sql` of the same filter
on the same projected rows: for every operator, NULLs and NOT/AND/OR included, the rows the live
feed picks in Python are the rows the list endpoint would select."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg import sql
from stack import roles

from domain.definition import parse_definition
from domain.execution import Execution
from infra.settings import Settings
from projections.query_language import parse, where_sql
from projections.query_match import matches
from projections.visibility import project

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
NAMES = ("billing-daily", "billing_x", "Billing", "bill%", "reports", "émile", "Zed", "zz", "ß")


# Search attributes of every type, some missing, one name with values of two types.
_ATTRIBUTES: list[dict[str, Any]] = [
    {"region": "eu", "amount": 120, "vip": True, "due": "2026-11-03T00:00:00Z"},
    {"region": "us", "amount": 80.5, "vip": False, "due": "2026-11-01"},
    {"region": "eu", "amount": 5},
    {},
    {"amount": "120", "region": "ap"},
    {"vip": True},
    {"region": "Eu", "due": "2026-11-02T08:00:00+01:00"},
]


def _execution(ws: UUID, wf: UUID, name: str, i: int) -> Execution:
    """An execution of a one-call workflow named `name`: running, completed, failed, canceled
    or failed by the call's timeout."""
    raw = {"name": name, "nodes": [{"id": "call", "type": "http_request", "config": {"url": "x"}}]}
    started = T0 + timedelta(seconds=37 * i)
    ex = Execution.start(
        uuid4(),
        str(ws),
        str(wf),
        1 + i % 3,
        parse_definition(raw).to_json(),
        {},
        started,
        trigger=("manual", "webhook", "schedule")[i % 3],
        search_attributes=_ATTRIBUTES[i % len(_ATTRIBUTES)],
    )
    closed = started + timedelta(milliseconds=250 * i)
    outcome = i % 5
    if outcome == 1:
        ex.complete_node("call", 1, {"ok": True}, closed)
    elif outcome == 2:
        ex.fail_node("call", 1, {"type": "http_status", "message": "HTTP 500"}, closed)
    elif outcome == 3:
        ex.cancel("enough", closed)
    elif outcome == 4:
        ex.time_out_node("call", 1, closed)
    return ex


@pytest.fixture(scope="module")
async def projected(settings: Settings) -> AsyncIterator[tuple[UUID, list[dict[str, Any]], Any]]:
    ws, workflows = uuid4(), [uuid4(), uuid4()]
    executions = [
        _execution(ws, workflows[i % 2], NAMES[i % len(NAMES)], i) for i in range(len(NAMES) * 5)
    ]
    async with roles(settings) as r:
        async with r.container.pool.connection() as conn:
            async with conn.transaction():
                events = [e for ex in executions for e in ex.collect_events()]
                await project(conn, [(None, e) for e in events])
            cur = await conn.execute("SELECT * FROM rm_executions WHERE workspace_id = %s", (ws,))
            rows = await cur.fetchall()
            await conn.commit()
        yield ws, rows, r.container


FILTERS = [
    "status = 'failed'",
    "status != 'running'",
    "NOT status = 'completed'",
    "status IN ('canceled', 'timed_out')",
    "NOT status IN ('canceled', 'timed_out')",
    "trigger = 'webhook' OR trigger = 'schedule'",
    "version > 1",
    "version >= 2 AND version <= 2",
    "version BETWEEN 2 AND 3",
    "version BETWEEN 3 AND 2",
    "workflow_name = 'billing_x'",
    "workflow_name != 'reports'",
    "workflow_name > 'billing'",
    "workflow_name >= 'Zed'",
    "workflow_name < 'b'",
    "workflow_name <= 'ß'",
    "workflow_name BETWEEN 'B' AND 'bill~'",
    "workflow_name STARTS_WITH 'bill'",
    "workflow_name STARTS_WITH 'billing_'",
    "workflow_name STARTS_WITH 'bill%'",
    "workflow_name STARTS_WITH 'é'",
    "workflow_name STARTS_WITH ''",
    "started_at > '2026-11-02T08:05:00Z'",
    "started_at BETWEEN '2026-11-02T09:00:00+01:00' AND '2026-11-02T08:10:00Z'",
    "closed_at < '2026-11-02T08:10:00Z'",
    "NOT closed_at < '2026-11-02T08:10:00Z'",
    "closed_at IS NULL",
    "closed_at IS NOT NULL",
    "NOT closed_at IS NULL",
    "duration_ms >= 5000",
    "NOT duration_ms >= 5000",
    "duration_ms BETWEEN 1000 AND 8000",
    "duration_ms != 0",
    "error_code = 'http_status'",
    "error_code != 'http_status'",
    "NOT error_code = 'http_status'",
    "error_code IN ('canceled', 'timeout')",
    "failed_node = 'call'",
    "failed_node IS NOT NULL AND NOT failed_node STARTS_WITH 'c'",
    "error_code = 'http_status' OR duration_ms < 1000",
    "NOT (error_code = 'http_status' OR duration_ms < 1000)",
    "NOT (error_code = 'x' AND status = 'running')",
    "(closed_at > '2026-11-02T08:03:00Z' OR status = 'running') AND NOT version = 1",
    "status = 'running' OR closed_at IS NULL AND NOT failed_node = 'x'",
    "attr.region = 'eu'",
    "attr.region != 'eu'",
    "NOT attr.region = 'eu'",
    "attr.region IN ('us', 'ap')",
    "attr.region STARTS_WITH 'e'",
    "attr.region IS NULL",
    "NOT attr.region IS NULL",
    "attr.amount > 50",
    "attr.amount BETWEEN 5 AND 80.5",
    "attr.amount = '120'",
    "NOT attr.amount = 120",
    "attr.vip = true",
    "NOT attr.vip = true",
    "attr.due > '2026-11-02'",
    "attr.due <= '2026-11-02T07:00:00Z'",
    "NOT (attr.region = 'eu' AND status = 'failed')",
    "NOT (attr.region = 'eu' OR attr.vip = true) AND version > 1",
    "attr.region = 'eu' OR NOT attr.amount < 100",
]


@pytest.mark.parametrize("q", FILTERS)
async def test_python_and_postgresql_select_the_same_rows(
    projected: tuple[UUID, list[dict[str, Any]], Any], q: str
) -> None:
    ws, rows, container = projected
    where = parse(q).where
    assert where is not None
    condition, params = where_sql(where)
    statement = sql.SQL("SELECT id FROM rm_executions WHERE workspace_id = %s AND {}").format(
        condition
    )
    async with container.pool.connection() as conn:
        cur = await conn.execute(statement, [ws, *params])
        in_sql = {r["id"] for r in await cur.fetchall()}
        await conn.commit()
    in_python = {r["id"] for r in rows if matches(where, r)}
    assert in_python == in_sql


def test_the_filters_tell_rows_apart(projected: tuple[UUID, list[dict[str, Any]], Any]) -> None:
    """No filter above is vacuous as a whole: most select some rows and leave others."""
    _, rows, _ = projected
    assert {r["status"] for r in rows} == {"running", "completed", "failed", "canceled"}
    assert {r["error_code"] for r in rows} == {None, "http_status", "canceled", "timeout"}
    counts = [sum(matches(parse(q).where, r) for r in rows) for q in FILTERS]
    assert sum(0 < count < len(rows) for count in counts) >= len(FILTERS) - 5
