"""The statistics endpoints over HTTP (issue 14, item 4), on the real PostgreSQL and Redis with
the relay and the projector running: `GET …/executions/count`, `…/executions/stats` and
`…/workflows/stats` answer what was started (read-your-writes with `min_position`), refuse bad
parameters with a 422 naming them, need a token (401) and membership (404: another's workspace
is not revealed; a viewer may read), never count another workspace's executions, and are
described by the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from api import Api
from stack import roles

from gateways.bootstrap import bootstrap
from gateways.http.app import make_app
from gateways.roles import rebuild_read_models
from infra.settings import Settings

PURE = {
    "name": "pure-stats",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
}
PATHS = ("/executions/count", "/executions/stats", "/workflows/stats")


@pytest.fixture
async def gateway(fresh_settings: Settings) -> AsyncIterator[str]:
    """The HTTP API alone (no relay, no projector)."""
    container = await bootstrap(fresh_settings)
    server = TestServer(make_app(container))
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()
        await container.close()


@pytest.fixture
async def server(gateway: str, fresh_settings: Settings) -> AsyncIterator[str]:
    """The HTTP API, the relay and the projector."""
    async with roles(fresh_settings, "relay", "projector"):
        yield gateway


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def user(server: str, session: aiohttp.ClientSession) -> Api:
    api = Api(server, session)
    await api.sign_up()
    return api


async def started(api: Api, runs: int) -> tuple[str, int]:
    """A workflow and `runs` executions of it (they complete as they start); the position of
    the last start."""
    workflow = await api.create_workflow(PURE)
    answers = [await api.start(workflow["id"], {"i": i}) for i in range(runs)]
    return workflow["id"], max(a["position"] for a in answers)


async def get(api: Api, path: str, **params: Any) -> Any:
    reply = await api.call("GET", api.ws(path), **params)
    assert reply.status == 200, reply.body
    return reply.body


async def test_the_three_endpoints_answer_what_was_started(
    server: str, session: aiohttp.ClientSession
) -> None:
    api = await user(server, session)
    workflow_id, at = await started(api, 3)
    count = await get(api, "/executions/count", group_by="status", min_position=at)
    assert count["count"] == 3
    assert count["groups"] == [{"values": {"status": "completed"}, "count": 3}]
    assert count["position"] >= at
    by_name = await get(api, "/executions/count", group_by="workflow_name,status", q="")
    assert by_name["groups"] == [
        {"values": {"workflow_name": "pure-stats", "status": "completed"}, "count": 3}
    ]

    body = await get(api, "/executions/stats", min_position=at)  # the last 24 hours by hour
    assert body["interval"] == "1h" and body["position"] >= at
    assert len(body["buckets"]) in (24, 25)
    assert sum(b["total"] for b in body["buckets"]) == 3
    [busy] = [b for b in body["buckets"] if b["total"]]
    assert busy["by_status"]["completed"] == 3 and busy["failure_rate"] == 0.0
    assert busy["duration_ms"]["p50"] is not None

    now = datetime.now(UTC)
    window = {"from": (now - timedelta(minutes=3)).isoformat(), "to": now.isoformat()}
    minutes = await get(api, "/executions/stats", interval="1m", q="status = 'completed'", **window)
    assert sum(b["total"] for b in minutes["buckets"]) == 3
    assert [b["start"][-6:] for b in minutes["buckets"]] == ["+00:00"] * len(minutes["buckets"])

    items = (await get(api, "/workflows/stats", min_position=at))["items"]
    assert [(i["workflow_id"], i["name"], i["total"]) for i in items] == [
        (workflow_id, "pure-stats", 3)
    ]
    assert items[0]["last_started_at"] is not None
    assert set(items[0]["duration_ms"]) == {"p50", "p95"}


COUNT, STATS, WORKFLOWS = PATHS
NOV1, NOV2 = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"
INVALID = "invalid_request"
# path, parameters, error code, the detail's path, what its message says
BAD: list[tuple[str, dict[str, str], str, str, str]] = [
    (COUNT, {"group_by": "colour"}, INVALID, "group_by", "status, workflow_id, trigger"),
    (COUNT, {"group_by": "status,status"}, INVALID, "group_by", "twice"),
    (COUNT, {"q": "status = 'lost'"}, "invalid_query", "q", "status is one of"),
    (COUNT, {"min_position": "-1"}, INVALID, "min_position", "integer"),
    (STATS, {"interval": "2m"}, INVALID, "interval", "1m, 5m, 1h, 1d"),
    (STATS, {"from": "yesterday"}, INVALID, "from", "ISO 8601"),
    (STATS, {"to": "2026-13-01T00:00:00Z"}, INVALID, "to", "ISO 8601"),
    (STATS, {"from": NOV2, "to": NOV2}, INVALID, "from", "before to"),
    (STATS, {"from": NOV1, "to": NOV2, "interval": "1m"}, INVALID, "interval", "1440 buckets"),
    (STATS, {"from": "0001-01-01T00:00:00Z", "interval": "1d"}, INVALID, "from", "between"),
    (STATS, {"q": "colour = 1"}, "invalid_query", "q", "unknown field"),
    (WORKFLOWS, {"from": "2020-01-01T00:00:00Z"}, INVALID, "from", "1000 days"),
    (WORKFLOWS, {"from": NOV1, "to": "2026-11-01T00:00:00+01:00"}, INVALID, "from", "before to"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "params", "code", "field", "says"), BAD)
async def test_bad_parameters_are_422_naming_them(
    server: str,
    session: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    code: str,
    field: str,
    says: str,
) -> None:
    api = await user(server, session)
    reply = await api.call("GET", api.ws(path), **params)
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == code
    details = reply.body["error"]["details"]
    assert field in [d["path"] for d in details], details
    assert any(says in d["message"] for d in details), details


async def test_too_many_buckets_name_interval_and_from(
    server: str, session: aiohttp.ClientSession
) -> None:
    api = await user(server, session)
    params = {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "interval": "1h"}
    reply = await api.call("GET", api.ws("/executions/stats"), **params)
    assert reply.status == 422
    assert [d["path"] for d in reply.body["error"]["details"]] == ["interval", "from"]
    params["interval"] = "1d"  # 59 days
    assert (await api.call("GET", api.ws("/executions/stats"), **params)).status == 200


async def test_a_token_and_membership_are_needed(
    server: str, session: aiohttp.ClientSession
) -> None:
    owner, stranger = await user(server, session), await user(server, session)
    _, at = await started(owner, 1)
    for path in PATHS:
        anonymous = await owner.call("GET", owner.ws(path), token="")
        assert (anonymous.status, anonymous.body["error"]["code"]) == (401, "unauthenticated")
        other = await stranger.call("GET", owner.ws(path))
        assert (other.status, other.body["error"]["code"]) == (404, "not_found"), path
    email = (await stranger.call("GET", "me")).body["user"]["email"]
    added = await owner.call("POST", owner.ws("/members"), json={"email": email, "role": "viewer"})
    assert added.status == 201, added.body
    for path in PATHS:
        reply = await stranger.call("GET", owner.ws(path), min_position=at)
        assert reply.status == 200, (path, reply.body)
    count = await stranger.call("GET", owner.ws("/executions/count"), min_position=at)
    assert count.body["count"] == 1


async def test_another_workspaces_executions_are_never_counted(
    server: str, session: aiohttp.ClientSession
) -> None:
    mine, theirs = await user(server, session), await user(server, session)
    my_workflow, mine_at = await started(mine, 2)
    their_workflow, theirs_at = await started(theirs, 3)
    at = max(mine_at, theirs_at)
    for api, runs, workflow in ((mine, 2, my_workflow), (theirs, 3, their_workflow)):
        assert (await get(api, "/executions/count", min_position=at))["count"] == runs
        # The other's workflow named in a filter matches nothing, on either path.
        other = their_workflow if api is mine else my_workflow
        for q in (f"workflow_id = '{other}'", f"workflow_id = '{other}' AND version = 1"):
            assert (await get(api, "/executions/count", q=q))["count"] == 0
        stats = await get(api, "/executions/stats", interval="1d")
        assert sum(b["total"] for b in stats["buckets"]) == runs
        items = (await get(api, "/workflows/stats"))["items"]
        assert [(i["workflow_id"], i["total"]) for i in items] == [(workflow, runs)]


async def test_a_rebuild_gives_the_same_answers(
    gateway: str, fresh_settings: Settings, session: aiohttp.ClientSession
) -> None:
    """`linkflow rebuild-read-models` (its function) rebuilds the rollups from the log."""
    api = await user(server=gateway, session=session)
    workflow = await api.create_workflow(PURE)
    slow = await api.create_workflow(
        {"name": "waits", "nodes": [{"id": "d", "type": "delay", "config": {"seconds": 3600}}]}
    )
    at = 0
    for wf in (workflow["id"], slow["id"], workflow["id"]):
        at = max(at, (await api.start(wf, {}))["position"])
    now = datetime.now(UTC)
    minutes = {"from": (now - timedelta(minutes=30)).isoformat(), "to": now.isoformat()}
    days = {"from": (now - timedelta(days=30)).isoformat(), "to": now.isoformat()}
    queries = [
        ("/executions/count", {"group_by": "workflow_id,status"}),
        ("/executions/count", {"group_by": "status", "q": "duration_ms >= 0"}),
        ("/executions/stats", {"interval": "1m", **minutes}),
        ("/executions/stats", {"interval": "1d", **days}),
        ("/workflows/stats", days),
    ]
    async with roles(fresh_settings, "relay", "projector"):
        live = [await get(api, path, min_position=at, **params) for path, params in queries]
    assert live[0]["count"] == 3
    assert {g["values"]["status"] for g in live[0]["groups"]} == {"completed", "running"}
    assert await rebuild_read_models(fresh_settings) is not None
    rebuilt = [await get(api, path, **params) for path, params in queries]
    for answer in live + rebuilt:
        answer.pop("position", None)  # the rebuild moved it on
    assert rebuilt == live


async def test_openapi_describes_the_endpoints(server: str, session: aiohttp.ClientSession) -> None:
    api = Api(server, session)
    document = (await api.call("GET", "openapi.json")).body
    for path, params in zip(
        PATHS,
        (
            {"q", "group_by", "min_position"},
            {"q", "from", "to", "interval", "min_position"},
            {"from", "to", "min_position"},
        ),
        strict=True,
    ):
        operation = document["paths"]["/api/v1/workspaces/{ws}" + path]["get"]
        assert {p["name"] for p in operation["parameters"]} - {"ws"} == params
        assert "422" in operation["responses"]
    stats = document["paths"]["/api/v1/workspaces/{ws}/executions/stats"]["get"]
    assert "failure_rate = (failed + timed_out) / closed" in stats["summary"]
    default_from = next(p for p in stats["parameters"] if p["name"] == "from")
    assert "24 hours before to" in default_from["description"]
