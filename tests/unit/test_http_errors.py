"""Unit tests for the HTTP gateway's error mapping and request validation (gateways.http).

They run the real application from `make_app` against a stand-in container whose bus and pool
are fakes: no PostgreSQL or Redis is needed, so only what is answered before or without them
is exercised here (the end-to-end tests drive the real stack).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis.exceptions as redis_errors
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing import persistence as es_errors
from prometheus_client import REGISTRY
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

from commands.bus import CommandConflict
from commands.handlers import ExecutionAnswer, NotFound, Result
from commands.identity import RefreshRefused
from commands.principal import authorise
from domain.base import DomainError
from domain.definition import DefinitionInvalid, Problem
from domain.roles import Action
from gateways.http.app import make_app
from gateways.http.errors import ApiError, build, error_middleware, parse_uuid, read_json
from gateways.http.tokens import issue_access_token
from infra.recorder import EventTooLarge
from infra.settings import Settings

# No pool stands behind these tests: admission control (which counts open executions in the
# read model) is off (0).
SETTINGS = Settings(max_body_bytes=1000, max_queued_per_workspace=0)


@dataclass
class FakeBus:
    """Answers `run` from a table of lookups and `execute` with a scripted outcome."""

    role: str | None = "owner"
    outcome: Callable[[Any], Result] | Exception | None = None
    commands: list[Any] = field(default_factory=list)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn.__name__ == "member_role":
            return self.role
        if fn.__name__ == "authenticate":
            return None
        raise AssertionError(f"unexpected lookup {fn.__name__}")

    async def execute_as(
        self, caller: Any, workspace_id: Any, action: Action, build: Callable[[], Any]
    ) -> Result:
        authorise(self.role, action)  # the command layer's decision, as CommandBus.execute_as
        return await self.execute(await build())

    async def execute(self, cmd: Any, reads: Any = None) -> Result:
        self.commands.append(cmd)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        if self.outcome is None:
            raise AssertionError("no command expected")
        return self.outcome(cmd)


@dataclass
class FakeContainer:
    settings: Settings
    bus: FakeBus
    store: Any = None
    pool: Any = None
    redis: Any = None


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient, FakeBus]]:
    bus = FakeBus()
    app = make_app(FakeContainer(SETTINGS, bus))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        yield client, bus


def auth_header(user: uuid.UUID | None = None) -> dict[str, str]:
    token, _ = issue_access_token(SETTINGS, user or uuid.uuid4())
    return {"Authorization": f"Bearer {token}"}


def error_of(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


# ---------------------------------------------------------------- routing and auth


async def test_unknown_route_is_json_404(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404
    assert error_of(await resp.json())["code"] == "not_found"


async def test_wrong_method_is_json_405(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.delete("/api/v1/me")
    assert resp.status == 405
    assert error_of(await resp.json())["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_missing_bearer_is_401(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/me")
    assert resp.status == 401
    assert error_of(await resp.json())["code"] == "unauthenticated"
    resp = await client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert resp.status == 401
    assert error_of(await resp.json())["code"] == "unauthenticated"


async def test_bad_token_is_401_invalid_token(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/me", headers={"Authorization": "Bearer x.y.z"})
    assert resp.status == 401
    assert error_of(await resp.json())["code"] == "invalid_token"


async def test_malformed_workspace_id_is_404(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/workspaces/not-a-uuid/workflows", headers=auth_header())
    assert resp.status == 404
    assert error_of(await resp.json())["code"] == "not_found"


async def test_non_member_is_404_and_viewer_cannot_write(api: tuple[TestClient, FakeBus]) -> None:
    client, bus = api
    path = f"/api/v1/workspaces/{uuid.uuid4()}/workflows"
    bus.role = None
    resp = await client.post(path, json={"name": "x"}, headers=auth_header())
    assert resp.status == 404
    bus.role = "viewer"
    resp = await client.post(path, json={"name": "x"}, headers=auth_header())
    assert resp.status == 403
    assert error_of(await resp.json())["code"] == "forbidden"
    assert bus.commands == []


# ---------------------------------------------------------------- bodies


async def test_malformed_json_is_400(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    for raw in (b"{", b"", b"[1,", b'{"a": NaN}', b"\xff\xfe"):
        resp = await client.post("/api/v1/auth/register", data=raw)
        assert resp.status == 400, raw
        assert error_of(await resp.json())["code"] == "malformed_json"


async def test_json_is_parsed_whatever_the_content_type(api: tuple[TestClient, FakeBus]) -> None:
    client, bus = api
    bus.outcome = RefreshRefused("unknown")
    resp = await client.post(
        "/api/v1/auth/refresh",
        data=json.dumps({"refresh_token": "lfr_x"}),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 401  # parsed, validated, then refused by the (fake) command
    assert error_of(await resp.json())["code"] == "invalid_refresh_token"


async def test_body_over_limit_is_413(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    big = json.dumps({"email": "a@b.c", "password": "x" * 2000, "name": "n"}).encode()
    resp = await client.post("/api/v1/auth/register", data=big)
    assert resp.status == 413
    assert error_of(await resp.json())["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(20):
            yield b" " * 100

    resp = await client.post("/api/v1/auth/register", data=chunks())
    assert resp.status == 413
    assert error_of(await resp.json())["code"] == "payload_too_large"


async def test_invalid_request_lists_each_field(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.post(
        "/api/v1/auth/register", json={"email": "nope", "password": "short", "extra": 1}
    )
    assert resp.status == 422
    error = error_of(await resp.json())
    assert error["code"] == "invalid_request"
    paths = sorted(d["path"] for d in error["details"])
    assert paths == ["email", "extra", "name", "password"]


async def test_client_may_not_set_server_fields(api: tuple[TestClient, FakeBus]) -> None:
    client, bus = api
    resp = await client.post(
        "/api/v1/workspaces",
        json={"name": "w", "actor_id": str(uuid.uuid4())},
        headers=auth_header(),
    )
    assert resp.status == 422
    assert error_of(await resp.json())["details"] == [
        {"path": "actor_id", "message": "Extra inputs are not permitted"}
    ]
    assert bus.commands == []


async def test_definition_must_be_an_object(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.post(
        f"/api/v1/workspaces/{uuid.uuid4()}/workflows", json=[1, 2], headers=auth_header()
    )
    assert resp.status == 422
    error = error_of(await resp.json())
    assert error["code"] == "invalid_definition"
    assert error["details"][0]["path"] == ""


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


async def test_a_body_nested_deeper_than_the_limit_is_422_naming_the_path(
    api: tuple[TestClient, FakeBus],
) -> None:
    client, bus = api
    body = {"email": "a@b.c", "password": "x" * 12, "name": nested(64)}  # 65 levels
    resp = await client.post("/api/v1/auth/register", json=body)
    assert resp.status == 422
    error = error_of(await resp.json())
    assert error["code"] == "too_deep"
    assert error["details"] == [
        {"path": "name" + "[0]" * 63, "message": "nested deeper than 64 levels"}
    ]
    body["name"] = nested(63)  # 64 levels: read, then refused by the model (not a string)
    resp = await client.post("/api/v1/auth/register", json=body)
    assert resp.status == 422
    assert error_of(await resp.json())["code"] == "invalid_request"
    assert bus.commands == []


async def test_a_definition_nested_deeper_than_the_limit_is_422(
    api: tuple[TestClient, FakeBus],
) -> None:
    client, bus = api
    config = {"set": {"x": nested(70, {"k": 1})}}
    definition = {"name": "d", "nodes": [{"id": "a", "type": "transform", "config": config}]}
    resp = await client.post(
        f"/api/v1/workspaces/{uuid.uuid4()}/workflows", json=definition, headers=auth_header()
    )
    assert resp.status == 422
    [detail] = error_of(await resp.json())["details"]
    assert detail["path"] == "nodes[0].config.set.x" + "[0]" * 59
    assert bus.commands == []


async def test_a_body_too_deep_for_the_parser_is_422_too_deep_not_400() -> None:
    app = make_app(FakeContainer(Settings(max_body_bytes=10**6), FakeBus()))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000):
            resp = await client.post("/api/v1/auth/register", data=raw)
            assert resp.status == 422
            error = error_of(await resp.json())
            assert error["code"] == "too_deep"
            assert error["details"] == [{"path": "", "message": "nested deeper than 64 levels"}]


async def test_the_depth_limit_is_a_setting() -> None:
    app = make_app(FakeContainer(Settings(max_json_depth=3), FakeBus()))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/auth/register", json={"a": {"b": {"c": {}}}})
        assert resp.status == 422
        assert error_of(await resp.json())["details"] == [
            {"path": "a.b.c", "message": "nested deeper than 3 levels"}
        ]


async def test_invalid_query_parameters_are_422(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    path = f"/api/v1/workspaces/{uuid.uuid4()}/executions"
    resp = await client.get(
        path,
        params={"status": "weird", "workflow_id": "x", "limit": "0", "started_after": "yesterday"},
        headers=auth_header(),
    )
    assert resp.status == 422
    error = error_of(await resp.json())
    assert error["code"] == "invalid_request"
    paths = {d["path"] for d in error["details"]}
    assert paths == {"status", "workflow_id", "limit", "started_after"}
    resp = await client.get(path, params={"cursor": "!!"}, headers=auth_header())
    assert resp.status == 422
    assert error_of(await resp.json())["code"] == "invalid_cursor"
    resp = await client.get(path, params={"min_position": "-1"}, headers=auth_header())
    assert resp.status == 422


# ---------------------------------------------------------------- command outcomes


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (DomainError("a user with this email already exists", "email_taken"), 409, "email_taken"),
        (DomainError("workflow has no version 9", "unknown_version"), 422, "unknown_version"),
        (DomainError("bad role", "invalid_role"), 422, "invalid_role"),
        (DomainError("execution is completed", "not_running"), 409, "not_running"),
        (NotFound("workflow"), 404, "not_found"),
        (DefinitionInvalid([Problem("nodes[0].type", "unknown")]), 422, "invalid_definition"),
        (CommandConflict("StartExecution"), 503, "busy"),
        (
            EventTooLarge("domain.execution:Execution.Started", 3_000_000, 2_097_152),
            413,
            "event_too_large",
        ),
        (PoolTimeout("couldn't get a connection after 3.00 sec"), 503, "unavailable"),
        (psycopg.OperationalError("server closed the connection"), 503, "unavailable"),
        (es_errors.OperationalError("connection refused"), 503, "unavailable"),
        (redis_errors.ConnectionError("Error 111 connecting"), 503, "unavailable"),
        (redis_errors.TimeoutError("Timeout reading from socket"), 503, "unavailable"),
        (RuntimeError("secret internals"), 500, "internal"),
    ],
)
async def test_command_errors_are_mapped(
    api: tuple[TestClient, FakeBus], exc: Exception, status: int, code: str
) -> None:
    client, bus = api
    bus.outcome = exc
    ws, wf = uuid.uuid4(), uuid.uuid4()
    resp = await client.post(
        f"/api/v1/workspaces/{ws}/workflows/{wf}/executions",
        json={"input": {"x": 1}},
        headers=auth_header(),
    )
    assert resp.status == status
    error = error_of(await resp.json())
    assert error["code"] == code
    assert "secret internals" not in error["message"]
    if code == "busy":
        assert resp.headers["Retry-After"] == "1"
    if code == "unavailable":
        assert resp.headers["Retry-After"] == "2"
    if code == "not_found":
        assert error["message"] == "workflow not found"
    if code == "invalid_definition":
        assert error["details"] == [{"path": "nodes[0].type", "message": "unknown"}]


async def test_start_execution_answer(api: tuple[TestClient, FakeBus]) -> None:
    client, bus = api
    execution_id = uuid.uuid4()
    bus.outcome = lambda cmd: ExecutionAnswer(
        42, execution_id=execution_id, status="running", repeated=True
    )
    ws, wf = uuid.uuid4(), uuid.uuid4()
    resp = await client.post(
        f"/api/v1/workspaces/{ws}/workflows/{wf}/executions",
        headers={**auth_header(), "Idempotency-Key": "abc"},
    )
    assert resp.status == 202
    answer = {"execution_id": str(execution_id), "status": "running", "position": 42}
    assert await resp.json() == answer
    assert resp.headers["Idempotent-Replayed"] == "true"
    (cmd,) = bus.commands
    assert (cmd.workspace_id, cmd.workflow_id, cmd.idempotency_key) == (ws, wf, "abc")
    assert cmd.input is None and cmd.trigger == "manual"


async def test_metrics_use_the_canonical_route(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    ws = uuid.uuid4()
    await client.get(f"/api/v1/workspaces/{ws}/executions/{uuid.uuid4()}")
    labels = {"method": "GET", "route": "/api/v1/workspaces/{ws}/executions/{id}", "status": "401"}
    assert (REGISTRY.get_sample_value("linkflow_http_requests_total", labels) or 0) >= 1


async def test_openapi_lists_every_route(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    served = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()  # type: ignore[union-attr]
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    start = doc["paths"]["/api/v1/workspaces/{ws}/workflows/{wf}/executions"]["post"]
    schema_ref = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(schema["properties"]) == {
        "input",
        "version",
        "callback_url",
        "search_attributes",
        "priority",
    }


async def test_health(api: tuple[TestClient, FakeBus]) -> None:
    client, _ = api
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "roles": ["gateway"]}


# ---------------------------------------------------------------- helpers in isolation


class Sample(BaseModel):
    a: int
    b: dict[str, int] = {}


def test_build_paths_and_shapes() -> None:
    with pytest.raises(ApiError) as info:
        build(Sample, {"a": "x", "b": {"x": "y"}})
    assert info.value.status == 422
    assert sorted(d["path"] for d in info.value.details) == ["a", "b.x"]
    with pytest.raises(ApiError) as info:
        build(Sample, [1])
    assert info.value.details == [{"path": "", "message": "the request body must be a JSON object"}]
    assert build(Sample, None, a=1).a == 1


def test_parse_uuid() -> None:
    value = uuid.uuid4()
    assert parse_uuid(str(value), "workflow") == value
    with pytest.raises(ApiError) as info:
        parse_uuid("123", "workflow")
    assert (info.value.status, info.value.code, info.value.message) == (
        404,
        "not_found",
        "workflow not found",
    )


async def test_error_middleware_alone() -> None:
    async def boom(request: web.Request) -> web.Response:
        raise ApiError(418, "teapot", "short and stout", [{"path": "", "message": "m"}])

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await read_json(request, optional=True))

    app = web.Application(middlewares=[error_middleware], client_max_size=50)
    app.router.add_get("/boom", boom)
    app.router.add_post("/echo", echo)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/boom")
        assert resp.status == 418
        assert await resp.json() == {
            "error": {
                "code": "teapot",
                "message": "short and stout",
                "details": [{"path": "", "message": "m"}],
            }
        }
        resp = await client.post("/echo")
        assert resp.status == 200 and await resp.json() is None
        resp = await client.post("/echo", data=b"x" * 60)
        assert resp.status == 413
