"""Search attributes on the real PostgreSQL (issue 14, item 3): executions started with
attributes (given, and derived from `settings.search_attributes`) are projected into
`rm_executions.search_attributes` and `rm_execution_attributes`; `attr.<name>` filters select
them with SQL's semantics (an execution without the attribute matches neither a comparison nor
its NOT), through the per-type indexes; over HTTP the start takes them, refuses bad ones with a
422 naming them, reads and lists show them, and a rebuild gives the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from api import Api
from psycopg import sql
from stack import eventually, roles

from domain.definition import parse_definition
from domain.execution import Execution
from gateways.roles import rebuild_read_models
from infra.settings import Settings
from projections import queries
from projections.query_language import parse
from projections.visibility import project

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
DEFINITION = parse_definition(
    {"name": "orders", "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}]}
).to_json()

# What each execution of the scenario is started with (None: no attributes at all).
ATTRIBUTES: list[dict[str, Any] | None] = [
    {"region": "eu", "amount": 120, "vip": True, "due": "2026-11-03T00:00:00Z"},
    {"region": "us", "amount": 80.5, "vip": False, "due": "2026-11-01"},
    {"region": "eu", "amount": 5, "code": "a_1"},
    {"region": "apac", "code": "ab"},
    None,
    {"amount": "120"},  # text, not a number: no numeric comparison matches it
]


@pytest.fixture(scope="module")
async def projected(settings: Settings) -> AsyncIterator[tuple[UUID, list[UUID], Any]]:
    ws = uuid4()
    executions = [
        Execution.start(
            uuid4(),
            str(ws),
            str(uuid4()),
            1,
            DEFINITION,
            {},
            T0 + timedelta(minutes=i),
            search_attributes=attributes,
        )
        for i, attributes in enumerate(ATTRIBUTES)
    ]
    async with roles(settings) as r:
        async with r.container.pool.connection() as conn:
            async with conn.transaction():
                events = [e for ex in executions for e in ex.collect_events()]
                await project(conn, [(None, e) for e in events])
        yield ws, [ex.id for ex in executions], r.container


async def listed(c: Any, ws: UUID, q: str) -> list[UUID]:
    async with c.pool.connection() as conn:
        page = await queries.list_executions(conn, ws, q=parse(q))
        await conn.commit()
    return [UUID(item["id"]) for item in page["items"]]


async def test_attribute_filters_select_with_sql_semantics(
    projected: tuple[UUID, list[UUID], Any],
) -> None:
    ws, ids, c = projected
    expectations = {
        "attr.region = 'eu'": [0, 2],
        "attr.region != 'eu'": [1, 3],  # not 4 and 5: they have no region
        "NOT attr.region = 'eu'": [1, 3],
        "NOT (attr.region = 'eu' AND attr.vip = true)": [1, 3],  # 2: NOT (true AND NULL)
        "attr.region IN ('us', 'apac')": [1, 3],
        "attr.region IS NULL": [4, 5],
        "NOT attr.region IS NULL": [0, 1, 2, 3],
        "attr.amount > 50": [0, 1],
        "attr.amount BETWEEN 5 AND 80.5": [1, 2],
        "attr.amount = 120": [0],  # the text '120' is no number
        "attr.amount = '120'": [5],
        "attr.vip = false": [1],
        "attr.due > '2026-11-02'": [0],
        "attr.due <= '2026-11-01T00:00:00+00:00'": [1],
        "attr.code STARTS_WITH 'a_'": [2],  # `_` is no wildcard
        "attr.code STARTS_WITH 'a'": [2, 3],
        "attr.region = 'eu' OR attr.amount > 100": [0, 2],
        "attr.nothing = 'x'": [],
        "attr.region = 'x'' OR 1=1 --'": [],
    }
    for q, positions in expectations.items():
        expected = [ids[i] for i in sorted(positions, reverse=True)]  # newest first
        assert await listed(c, ws, q) == expected, q


async def test_list_items_and_reads_carry_the_attributes(
    projected: tuple[UUID, list[UUID], Any],
) -> None:
    ws, ids, c = projected
    async with c.pool.connection() as conn:
        page = await queries.list_executions(conn, ws)
        one = await queries.get_execution(conn, ws, ids[1])
        await conn.commit()
    by_id = {UUID(item["id"]): item["search_attributes"] for item in page["items"]}
    assert by_id == {ex: attributes or {} for ex, attributes in zip(ids, ATTRIBUTES, strict=True)}
    assert one is not None and one["search_attributes"] == ATTRIBUTES[1]


@pytest.mark.parametrize(
    ("q", "index"),
    [
        ("attr.region = 'eu'", "rm_execution_attributes_text"),
        ("attr.amount > 50", "rm_execution_attributes_num"),
        ("attr.due BETWEEN '2026-11-01' AND '2026-11-30'", "rm_execution_attributes_time"),
        ("attr.vip = true", "rm_execution_attributes_bool"),
    ],
)
async def test_equality_and_ranges_on_attributes_use_an_index(
    projected: tuple[UUID, list[UUID], Any], q: str, index: str
) -> None:
    """With sequential scans and nested-loop probes by primary key off (on a table this small the
    planner would rightly scan), the attribute's filter runs on its type's index."""
    ws, _, c = projected
    statement, params = queries.list_statement(ws, q=parse(q))
    async with c.pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL enable_nestloop = off")
            cur = await conn.execute(sql.SQL("EXPLAIN {}").format(statement), params)
            plan = "\n".join(row["QUERY PLAN"] for row in await cur.fetchall())
    assert index in plan, plan


# ---------------------------------------------------------------- over HTTP

ORDERS = {
    "name": "orders-http",
    "settings": {
        "search_attributes": {
            "customer": "{{ trigger.customer }}",
            "total": "{{ trigger.total }}",
            "region": "{{ trigger.region }}",
        }
    },
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
}


async def test_a_bad_attribute_is_refused_naming_it(api: Api) -> None:
    workflow = await api.create_workflow(ORDERS)
    path = api.ws(f"/workflows/{workflow['id']}/executions")
    for attributes, fragment in (
        ({"Region": "eu"}, "Region: a name matches [a-z][a-z0-9_]{0,39}"),
        ({"region": {"x": 1}}, "region: an object is not a search attribute value"),
        ({f"a{i}": i for i in range(21)}, "at most 20 search attributes"),
        ({"note": "x" * 257}, "note: text longer than 256 characters"),
    ):
        reply = await api.call("POST", path, json={"search_attributes": attributes})
        assert reply.status == 422, reply.body
        [detail] = reply.body["error"]["details"]
        assert detail["path"] == "search_attributes" and fragment in detail["message"], detail
    bad = dict(ORDERS, settings={"search_attributes": {"customer": 3}})
    reply = await api.call("POST", api.ws("/workflows"), json=bad)
    assert reply.status == 422
    assert any(
        d["path"].startswith("settings.search_attributes") for d in reply.body["error"]["details"]
    ), reply.body


async def test_attributes_given_and_derived_are_read_listed_filtered_and_rebuilt(
    api: Api, fresh_settings: Settings
) -> None:
    workflow = await api.create_workflow(ORDERS)
    acme = await api.start(
        workflow["id"],
        {"customer": "acme", "total": 250, "region": "eu"},
        search_attributes={"region": "us", "priority": 1},  # given wins over derived
    )
    other = await api.start(workflow["id"], {"customer": "globex", "total": 12.5})
    at = max(acme["position"], other["position"])
    path = api.ws("/executions")

    async def matches(q: str) -> list[str]:
        reply = await api.call("GET", path, q=q, min_position=at)
        assert reply.status == 200, reply.body
        return [item["id"] for item in reply.body["items"]]

    expectations = {
        "attr.customer = 'acme'": [acme["execution_id"]],
        "attr.total >= 12.5": [other["execution_id"], acme["execution_id"]],
        "attr.region IS NULL": [other["execution_id"]],
        "attr.region = 'us' AND attr.priority = 1": [acme["execution_id"]],
    }
    async with roles(fresh_settings, "relay", "projector"):
        reply = await api.call("GET", api.ws(f"/executions/{acme['execution_id']}"))
        assert reply.status == 200, reply.body
        assert reply.body["search_attributes"] == {
            "customer": "acme",
            "total": 250,
            "region": "us",
            "priority": 1,
        }
        assert await eventually(lambda: _count(matches("attr.customer IS NOT NULL"), 2))
        before = {q: await matches(q) for q in expectations}
    assert before == expectations
    listed = await api.call("GET", path, min_position=at)
    assert {i["id"]: i["search_attributes"]["customer"] for i in listed.body["items"]} == {
        acme["execution_id"]: "acme",
        other["execution_id"]: "globex",
    }
    assert await rebuild_read_models(fresh_settings) is not None
    assert {q: await matches(q) for q in expectations} == expectations


async def _count(pending: Any, n: int) -> bool:
    return len(await pending) == n
