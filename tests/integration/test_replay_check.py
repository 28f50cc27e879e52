"""`linkflow replay check` on the real PostgreSQL: a log made through the HTTP command path and
domain aggregates saved through the event store, projected by the live projector; the check
(run as the `linkflow` command) passes on it and leaves the live tables as they were, names the
table and key of every live row changed behind the projector's back, names the aggregate of an
event whose topic no longer resolves, and compares only up to a lagging projector's position."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from api import Api
from examples import load_example
from processes import REPO, stack_env
from stack import Roles, eventually, roles

from domain.definition import parse_definition
from domain.execution import Execution
from infra.eventlog import head_position
from infra.settings import Settings
from projections.visibility import READ_MODEL_TABLES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PURE = {
    "name": "pure",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"x": 1}}},
        {"id": "b", "type": "transform", "config": {"set": {"y": 2}}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


def replay_check(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateways.cli", "replay", "check", *args],
        cwd=REPO,
        env=stack_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def summary(settings: Settings) -> tuple[int, dict[str, Any]]:
    done = replay_check(settings, "--json")
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def _domain_execution(ws: str, wf: str, example: str, input: Any) -> Execution:
    definition = parse_definition(load_example(example)).to_json()
    return Execution.start(uuid4(), ws, wf, 1, definition, input, T0)


async def build_log(api: Api, r: Roles) -> dict[str, str]:
    """Workflows, versions, executions of every closing status, credentials and API keys."""

    async def ok(method: str, path: str, body: Any = None) -> Any:
        reply = await api.call(method, api.ws(path), json=body)
        assert reply.status < 300, reply.body
        return reply.body

    pure = await api.create_workflow(PURE)
    await ok("PUT", f"/workflows/{pure['id']}", {**PURE, "name": "pure two"})
    await ok("POST", f"/workflows/{pure['id']}/activate", {})
    http = await api.create_workflow(load_example("order-followup.json"))
    archived = await api.create_workflow({**PURE, "name": "old"})
    await ok("DELETE", f"/workflows/{archived['id']}")
    completed = [
        (await api.start(pure["id"], {"n": i}, search_attributes={"customer": "acme", "n": i}))
        for i in range(3)
    ]
    running = await api.start(http["id"], {"base_url": "http://127.0.0.1:9", "order_id": 1})
    canceled = await api.start(http["id"], {"base_url": "http://127.0.0.1:9", "order_id": 2})
    await ok("POST", f"/executions/{canceled['execution_id']}/cancel", {})
    await ok("POST", "/credentials", {"name": "shop", "type": "api_token", "data": {"token": "t"}})
    gone = await ok("POST", "/credentials", {"name": "old", "type": "api_token", "data": {"t": 1}})
    await ok("DELETE", f"/credentials/{gone['id']}")
    key = await ok("POST", "/api-keys", {"name": "ci", "role": "member"})
    await ok("DELETE", f"/api-keys/{key['id']}")

    ws, wf = str(api.workspace), http["id"]
    failed = _domain_execution(ws, wf, "continue-on-error.json", {"base_url": "http://h"})
    failed.fail_node("lookup", 1, {"type": "http_status", "message": "HTTP 500"}, T0)
    timed_out = _domain_execution(ws, wf, "timeout.json", {"base_url": "http://h"})
    timed_out.time_out_node("slow", 1, T0 + timedelta(seconds=1))
    r.container.store.append(failed, timed_out)
    await caught_up(r)
    return {
        "completed": completed[0]["execution_id"],
        "running": running["execution_id"],
        "workspace": ws,
    }


async def caught_up(r: Roles) -> None:
    async def probe() -> bool:
        async with r.container.pool.connection() as conn:
            head = await head_position(conn)
            cur = await conn.execute(
                "SELECT position FROM consumer_positions WHERE consumer = 'projector'"
            )
            row = await cur.fetchone()
            await conn.commit()
        return row is not None and row["position"] == head

    await eventually(probe)


async def live_tables(r: Roles) -> dict[str, Any]:
    """Every live read model's rows, as JSON, in key order; and the schemas there are."""
    async with r.container.pool.connection() as conn:
        tables = {}
        for table in READ_MODEL_TABLES:
            cur = await conn.execute(
                f"SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]')"
                f" AS rows FROM {table} t"
            )
            row = await cur.fetchone()
            assert row is not None
            tables[table] = row["rows"]
        cur = await conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'replay%'")
        tables["scratch schemas"] = await cur.fetchall()
        await conn.commit()
    return tables


async def test_a_faithful_log_passes_and_the_live_tables_stay_as_they_were(
    api: Api, fresh_settings: Settings
) -> None:
    async with roles(fresh_settings, "relay", "projector") as r:
        await build_log(api, r)
        before = await live_tables(r)
        assert all(before[t] for t in READ_MODEL_TABLES), "every read model has rows"
        code, report = await asyncio.to_thread(summary, fresh_settings)
        assert (code, report["ok"]) == (0, True), report
        assert report["position"] == report["head"] == report["events_replayed"]
        for table in READ_MODEL_TABLES:
            rows = report["tables"][table]
            assert rows["live_rows"] == rows["rebuilt_rows"] == len(before[table]) > 0, table
        assert report["aggregates"]["Execution"] == 7
        assert report["aggregates"]["Workflow"] == 3
        assert {"Credential", "ApiKey", "User", "Workspace"} <= set(report["aggregates"])
        assert report["compared_with_read_models"] >= 7 + 3 + 2 + 1
        assert report["events_refolded"] == report["head"]
        assert await live_tables(r) == before  # nothing written; the scratch schema is gone
        text = await asyncio.to_thread(replay_check, fresh_settings)
        assert text.returncode == 0, text.stdout + text.stderr
        assert "no differences" in text.stdout


async def test_live_rows_changed_behind_the_projector_are_named_by_table_and_key(
    api: Api, fresh_settings: Settings
) -> None:
    async with roles(fresh_settings, "relay", "projector") as r:
        ids = await build_log(api, r)
        async with r.container.pool.connection() as conn:
            await conn.execute(
                "UPDATE rm_executions SET status = 'failed' WHERE id = %s", (ids["completed"],)
            )
            await conn.execute(
                "DELETE FROM rm_node_runs WHERE execution_id = %s AND node_id = 'fetch'",
                (ids["running"],),
            )
            cur = await conn.execute(
                "UPDATE rm_execution_stats SET executions = executions + 5"
                " WHERE workspace_id = %s AND grain = '1 day' AND status = 'running'"
                " AND workflow_id = '00000000-0000-0000-0000-000000000000' RETURNING bucket",
                (ids["workspace"],),
            )
            [stats] = await cur.fetchall()
            await conn.commit()
        code, report = await asyncio.to_thread(summary, fresh_settings)
        assert (code, report["ok"]) == (1, False)
        found = {(d["table"], d["column"]): d for d in report["differences"]}
        status = found["rm_executions", "status"]
        assert (status["key"], status["live"], status["rebuilt"]) == (
            {"id": ids["completed"]},
            "failed",
            "completed",
        )
        node = found["rm_node_runs", "*"]
        assert node["key"] == {"execution_id": ids["running"], "node_id": "fetch"}
        assert (node["live"], node["rebuilt"]["status"]) == ("(no row)", "scheduled")
        rollups = [
            d
            for d in report["differences"]
            if d["table"] == "rm_execution_stats" and d["column"] == "executions"
            and d["key"]["status"] == "running" and d["key"]["grain"] == "1 day"
        ]  # fmt: skip
        assert [d["live"] - d["rebuilt"] for d in rollups] == [5]
        assert datetime.fromisoformat(rollups[0]["key"]["bucket"]) == stats["bucket"]
        text = await asyncio.to_thread(replay_check, fresh_settings)
        assert text.returncode == 1
        assert f"rm_executions [id={ids['completed']}] status" in text.stdout
        assert f"rm_node_runs [execution_id={ids['running']}, node_id=fetch]" in text.stdout


async def test_an_event_whose_topic_no_longer_resolves_names_its_aggregate(
    api: Api, fresh_settings: Settings
) -> None:
    async with roles(fresh_settings, "relay", "projector") as r:
        ids = await build_log(api, r)
        lost, running = uuid4(), UUID(ids["running"])
        async with r.container.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT max(originator_version) AS v FROM linkflow_events WHERE originator_id = %s",
                (running,),
            )
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO linkflow_events (originator_id, originator_version, topic, state)"
                " VALUES (%s, 1, 'domain.gone:Gone.Created', '{}'),"
                " (%s, %s, 'domain.execution:Execution.NodeRenamed', '{}')",
                (lost, running, row["v"] + 1),
            )
            await conn.commit()
        await caught_up(r)
        code, report = await asyncio.to_thread(summary, fresh_settings)
        assert (code, report["ok"]) == (1, False)
        assert report["differences"] == []  # the projector skips both, as the rebuild does
        failures = {f["aggregate_id"]: f for f in report["failures"]}
        assert set(failures) == {str(lost), ids["running"]}
        assert (failures[str(lost)]["aggregate_type"], failures[str(lost)]["version"]) == (
            "Gone",
            1,
        )
        renamed = failures[ids["running"]]
        assert (renamed["check"], renamed["aggregate_type"], renamed["topic"]) == (
            "fold",
            "Execution",
            "domain.execution:Execution.NodeRenamed",
        )
        text = await asyncio.to_thread(replay_check, fresh_settings)
        assert text.returncode == 1
        assert f"Execution {ids['running']}: fold failed at version {row['v'] + 1}" in text.stdout


async def test_a_lagging_projector_is_compared_at_its_own_position(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings, "relay", "projector") as r:
        ws, wf = str(uuid4()), str(uuid4())
        r.container.store.append(_domain_execution(ws, wf, "timeout.json", {"base_url": "x"}))
        await caught_up(r)
        await r.stop("projector")
        r.container.store.append(_domain_execution(ws, wf, "timeout.json", {"base_url": "y"}))
        code, report = await asyncio.to_thread(summary, fresh_settings)
        assert (code, report["ok"]) == (0, True), report
        assert report["position"] < report["head"]
        assert report["events_replayed"] == report["position"]
        assert report["tables"]["rm_executions"]["rebuilt_rows"] == 1
        assert report["aggregates"] == {"Execution": 2}  # every aggregate is re-folded
        text = await asyncio.to_thread(replay_check, fresh_settings)
        assert f"compared as of position {report['position']}" in text.stdout
