"""Actors and request ids (issue 15, item 1) on the real PostgreSQL: each kind of actor is
recorded beside the events it caused (read from `linkflow_events`, then through the workspace
event log), the request's `X-Request-Id` (given or generated) is answered and recorded, and a
group commit of commands by different actors keeps each one's actor."""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from api import Api
from psycopg.rows import dict_row

from commands import models as m
from domain.workspace import Workspace
from engine.schedules import Scheduler
from gateways.bootstrap import bootstrap
from infra.eventstore import EVENTS_TABLE, EventStore
from infra.origin import Origin, user_actor
from infra.settings import Settings

PURE = {"name": "pure", "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}]}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rows(settings: Settings, where: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(settings.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT notification_id, originator_id, topic, actor, request_id, workspace_id"
            f" FROM {EVENTS_TABLE} WHERE {where} ORDER BY notification_id",
            params,  # type: ignore[arg-type]
        ).fetchall()


def of_aggregate(settings: Settings, aggregate_id: str) -> list[dict[str, Any]]:
    return rows(settings, "originator_id = %s", UUID(aggregate_id))


async def me(api: Api) -> str:
    return str((await api.call("GET", "me")).body["user"]["id"])


async def log_of(api: Api, **params: Any) -> list[dict[str, Any]]:
    reply = await api.call("GET", api.ws("/events"), limit=1000, **params)
    assert reply.status == 200, reply.body
    return list(reply.body["items"])


async def test_a_users_events_record_the_user_and_the_generated_request_id(
    api: Api, fresh_settings: Settings
) -> None:
    user_id = await me(api)
    reply = await api.call("POST", api.ws("/workflows"), json=PURE)
    assert reply.status == 201, reply.body
    request_id = reply.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    [row] = of_aggregate(fresh_settings, reply.body["id"])
    assert row["actor"] == {"type": "user", "id": user_id}
    assert row["request_id"] == request_id
    assert str(row["workspace_id"]) == api.workspace
    [item] = await log_of(api, aggregate_id=reply.body["id"])
    assert item["actor"] == {"type": "user", "id": user_id}
    assert item["request_id"] == request_id


async def test_a_given_request_id_is_echoed_and_recorded(
    api: Api, fresh_settings: Settings
) -> None:
    given = "trace-1.2:3_x-Y"
    reply = await api.call("POST", api.ws("/workflows"), json=PURE, headers={"X-Request-Id": given})
    assert reply.status == 201 and reply.headers["X-Request-Id"] == given
    [row] = of_aggregate(fresh_settings, reply.body["id"])
    assert row["request_id"] == given


async def test_an_unusable_request_id_is_replaced_and_errors_answer_theirs(api: Api) -> None:
    for bad in ("x" * 129, "has space", "é"):
        reply = await api.call("GET", api.ws("/workflows"), headers={"X-Request-Id": bad})
        assert reply.status == 200
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-Id"]), bad
    longest = "a" * 128
    kept = await api.call("GET", api.ws("/workflows"), headers={"X-Request-Id": longest})
    assert kept.headers["X-Request-Id"] == longest
    missing = await api.call("GET", api.ws(f"/workflows/{uuid4()}"), headers={"X-Request-Id": "e1"})
    assert missing.status == 404 and missing.headers["X-Request-Id"] == "e1"
    anonymous = await api.call("GET", api.ws("/workflows"), token="", headers={"X-Request-Id": "a"})
    assert anonymous.status == 401 and anonymous.headers["X-Request-Id"] == "a"


async def test_an_api_keys_events_record_the_key(api: Api, fresh_settings: Settings) -> None:
    created = await api.call("POST", api.ws("/api-keys"), json={"name": "ci", "role": "member"})
    assert created.status == 201, created.body
    machine = Api(api.base, api.session)
    machine.token, machine.workspace = created.body["key"], api.workspace
    workflow = await machine.create_workflow(PURE)
    [row] = of_aggregate(fresh_settings, workflow["id"])
    assert row["actor"] == {"type": "api_key", "id": created.body["id"]}
    [item] = await log_of(api, actor_id=created.body["id"], types="WorkflowCreated")
    assert item["aggregate_id"] == workflow["id"]


async def test_a_webhook_start_records_the_webhook(api: Api, fresh_settings: Settings) -> None:
    definition = {**PURE, "trigger": {"type": "webhook"}}
    workflow = await api.create_workflow(definition)
    activated = await api.call("POST", api.ws(f"/workflows/{workflow['id']}/activate"))
    assert activated.status == 200, activated.body
    hook = Api(api.base, api.session)
    started = await hook.call(
        "POST", workflow["webhook"]["path"], json={"a": 1}, headers={"X-Request-Id": "hook-1"}
    )
    assert started.status == 202, started.body
    first = of_aggregate(fresh_settings, started.body["execution_id"])[0]
    assert first["topic"].endswith("ExecutionStarted")
    webhook = {"type": "webhook", "workflow_id": workflow["id"]}
    assert (first["actor"], first["request_id"]) == (webhook, "hook-1")
    items = await log_of(api, actor_id=workflow["id"], types="ExecutionStarted")
    assert [(i["aggregate_id"], i["actor"]) for i in items] == [
        (started.body["execution_id"], webhook)
    ]


async def test_a_schedule_start_records_the_schedule(api: Api, fresh_settings: Settings) -> None:
    trigger = {"type": "schedule", "cron": "*/5 * * * *"}
    workflow = await api.create_workflow({**PURE, "trigger": trigger})
    activated = await api.call("POST", api.ws(f"/workflows/{workflow['id']}/activate"))
    assert activated.status == 200, activated.body
    container = await bootstrap(fresh_settings)
    try:
        row = {
            "cron": trigger["cron"],
            "timezone": "UTC",
            "catch_up": "latest",
            "next_due": NOW,
            "workspace_id": UUID(api.workspace),
            "workflow_id": UUID(workflow["id"]),
        }
        outcome = await Scheduler(container.pool, container.bus)._run(row, NOW + timedelta(1))
        assert outcome.started == 1
    finally:
        await container.close()
    schedule = {"type": "schedule", "workflow_id": workflow["id"]}
    [started] = await log_of(api, types="ExecutionStarted")
    assert started["actor"] == schedule and started["request_id"] is None


async def test_the_engines_events_are_the_systems(api: Api, fresh_settings: Settings) -> None:
    """A command run outside any request (a worker's, a timer's) records no actor, and the log
    answers it as the system."""
    workflow = await api.create_workflow(PURE)
    container = await bootstrap(fresh_settings)
    try:
        cmd = m.StartExecution(
            workspace_id=UUID(api.workspace), workflow_id=UUID(workflow["id"]), input={}
        )
        result = await asyncio.create_task(container.bus.execute(cmd))
    finally:
        await container.close()
    stored = of_aggregate(fresh_settings, str(result.execution_id))
    assert stored and all(r["actor"] is None and r["request_id"] is None for r in stored)
    items = await log_of(api, aggregate_id=str(result.execution_id))
    assert items and {i["actor"]["type"] for i in items} == {"system"}


def test_a_group_commit_keeps_each_commands_actor(settings: Settings) -> None:
    store = EventStore(settings)
    transactions: list[int] = []
    original = store._put

    def counting_put(events: Any, reads: Any, origins: Any) -> list[int]:
        transactions.append(len(events))
        return original(events, reads, origins)

    store.group_commit._put = counting_put
    barrier = threading.Barrier(12)

    def save_one(i: int) -> tuple[Workspace, UUID]:
        ws = Workspace.create(uuid4(), f"w{i}", "owner", NOW)
        ws.add_member("u", "viewer", NOW)
        user = uuid4()
        barrier.wait()
        store.append(ws, origin=Origin(user_actor(user), f"r{i}"))
        return ws, user

    try:
        with ThreadPoolExecutor(12) as pool:
            saved = list(pool.map(save_one, range(12)))
    finally:
        store.close()
    assert len(transactions) < 12, "the saves should have shared transactions"
    for i, (ws, user) in enumerate(saved):
        stored = rows(settings, "originator_id = %s", ws.id)
        assert [(r["actor"], r["request_id"], r["workspace_id"]) for r in stored] == [
            ({"type": "user", "id": str(user)}, f"r{i}", ws.id)
        ] * 2
