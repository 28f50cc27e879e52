"""The gateway while PostgreSQL or Redis is away, in-process over real HTTP, with a fault proxy
between it and the dependency: quick 503 `unavailable` answers with Retry-After (never a hang,
never a 500), the request deadline, the waits that may outlast it (read-your-writes, webhooks
answering on completion), `/ready` against `/health`, and the first requests after PostgreSQL
returns (no stale pooled connection fails them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from api import Api, Reply
from faultproxy import FaultProxy

from gateways.bootstrap import Container, bootstrap
from gateways.http.app import make_app
from infra.db import CHECK_BYPASS_S
from infra.settings import Settings

CLIENT_WAIT_S = 20.0  # how long a test waits for any answer (a hang shows as status 0)
PURE = {
    "name": "pure",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": "{{ trigger.x }}"}}}],
}


@dataclass
class Gateway:
    api: Api
    container: Container
    pg: FaultProxy
    redis: FaultProxy

    async def timed(self, method: str, path: str, **kwargs: Any) -> tuple[Reply, float]:
        started = time.monotonic()
        try:
            reply = await self.api.call(method, path, **kwargs)
        except TimeoutError:
            reply = Reply(0, "no answer", {})
        return reply, time.monotonic() - started


@pytest.fixture
def proxies(settings: Settings) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    redis = urlsplit(settings.redis_url)
    assert redis.hostname is not None and redis.port is not None
    with (
        FaultProxy(settings.pg_host, settings.pg_port) as pg,
        FaultProxy(redis.hostname, redis.port) as rd,
    ):
        yield pg, rd


async def _gateway(
    settings: Settings, proxies: tuple[FaultProxy, FaultProxy], **overrides: Any
) -> AsyncIterator[Gateway]:
    pg, rd = proxies
    redis = urlsplit(settings.redis_url)
    proxied = settings.model_copy(
        update={
            "pg_port": pg.port,
            "redis_url": f"redis://{redis.hostname}:{rd.port}{redis.path}",
            **overrides,
        }
    )
    container = await bootstrap(proxied)
    server = TestServer(make_app(container))
    await server.start_server()
    timeout = aiohttp.ClientTimeout(total=CLIENT_WAIT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(str(server.make_url("/")), session)
            await api.sign_up()
            yield Gateway(api, container, pg, rd)
    finally:
        pg.restore()
        rd.restore()
        await server.close()
        await container.close()


@pytest.fixture
async def gateway(
    settings: Settings, proxies: tuple[FaultProxy, FaultProxy]
) -> AsyncIterator[Gateway]:
    async for gw in _gateway(settings, proxies):
        yield gw


@pytest.fixture
async def short_deadline(
    settings: Settings, proxies: tuple[FaultProxy, FaultProxy]
) -> AsyncIterator[Gateway]:
    """A 1 s request deadline, shorter than every wait for PostgreSQL (10 s)."""
    async for gw in _gateway(
        settings, proxies, request_deadline_s=1.0, pg_wait_s=10.0, webhook_wait_s=2.0
    ):
        yield gw


def assert_unavailable(reply: Reply) -> None:
    assert reply.status == 503, (reply.status, reply.body)
    assert reply.body["error"]["code"] == "unavailable", reply.body
    assert int(reply.headers["Retry-After"]) >= 1


async def test_requests_answer_503_unavailable_quickly_while_postgres_is_away(
    gateway: Gateway,
) -> None:
    wf = await gateway.api.create_workflow(PURE)
    started = await gateway.api.start(wf["id"], {"x": 1})
    gateway.pg.cut()
    limit = gateway.container.settings.request_deadline_s + 1.0  # a margin for a busy machine
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", gateway.api.ws(f"/workflows/{wf['id']}/executions"), {"json": {"input": {}}}),
        ("GET", gateway.api.ws(f"/executions/{started['execution_id']}"), {}),
        ("GET", gateway.api.ws("/executions"), {}),
        ("GET", "/api/v1/me", {}),
    ]
    for method, path, kwargs in requests:
        reply, elapsed = await gateway.timed(method, path, **kwargs)
        assert_unavailable(reply)
        assert elapsed <= limit, (method, path, elapsed)
    ready, elapsed = await gateway.timed("GET", "/ready")
    assert ready.status == 503 and ready.body["checks"]["postgres"] == "unreachable"
    assert elapsed <= limit
    health, _ = await gateway.timed("GET", "/health")
    assert health.status == 200


async def test_the_first_requests_after_postgres_returns_succeed(gateway: Gateway) -> None:
    reads = [gateway.api.ws(path) for path in ("/executions", "/workflows")] + ["/api/v1/me"]
    wf = await gateway.api.create_workflow(PURE)
    await gateway.api.start(wf["id"], {"x": 1})
    # Pooled connections (the gateway's and the event store's) were used...
    for path in reads:
        assert (await gateway.api.call("GET", path)).status == 200
    gateway.pg.cut()  # ... and dies with the server, which is away for a moment at least
    await asyncio.sleep(CHECK_BYPASS_S)  # (a connection used more recently goes unchecked)
    gateway.pg.restore()
    start, _ = await gateway.timed(
        "POST",
        gateway.api.ws(f"/workflows/{wf['id']}/executions"),
        json={"input": {"x": 2}},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert start.status == 202, start.body
    for path in reads:
        reply, _ = await gateway.timed("GET", path)
        assert reply.status == 200, (path, reply.body)
    assert (await gateway.api.call("GET", "/ready")).status == 200


async def test_the_deadline_answers_a_request_a_dependency_holds(short_deadline: Gateway) -> None:
    gw = short_deadline
    gw.pg.cut(hang=True)  # new connections are never answered: only the deadline ends a wait
    reply, elapsed = await gw.timed("GET", gw.api.ws("/executions"))
    assert_unavailable(reply)
    assert "outcome is unknown" in reply.body["error"]["message"]
    assert 0.9 <= elapsed <= 2.5, elapsed


async def test_a_read_your_writes_wait_answers_projection_lag_not_the_deadline(
    short_deadline: Gateway,
) -> None:
    gw = short_deadline
    wf = await gw.api.create_workflow(PURE)
    started = await gw.api.start(wf["id"], {"x": 1})  # no projector runs here
    reply, elapsed = await gw.timed(
        "GET", gw.api.ws("/executions"), min_position=started["position"]
    )
    assert reply.status == 503, reply.body
    assert reply.body["error"]["code"] == "projection_lag"
    assert 4.5 <= elapsed <= 7.0, elapsed


async def test_a_webhook_waiting_for_completion_answers_202_past_the_deadline(
    short_deadline: Gateway,
) -> None:
    gw = short_deadline
    hook = {
        "name": "waits",
        "trigger": {"type": "webhook", "respond": "on_completion"},
        "nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 60}}],
    }
    created = await gw.api.create_workflow(hook)
    activated = await gw.api.call("POST", gw.api.ws(f"/workflows/{created['id']}/activate"))
    assert activated.status == 200, activated.body
    reply, elapsed = await gw.timed("POST", created["webhook"]["path"], json={"a": 1})
    assert reply.status == 202, reply.body  # still running after webhook_wait_s (2 s)
    assert reply.body["status"] == "running"
    assert 1.9 <= elapsed <= 4.0, elapsed


async def test_ready_is_503_while_redis_is_away_and_health_stays_200(gateway: Gateway) -> None:
    assert (await gateway.api.call("GET", "/ready")).status == 200
    gateway.redis.cut()
    ready, elapsed = await gateway.timed("GET", "/ready")
    assert ready.status == 503, ready.body
    assert ready.body["checks"] == {"postgres": "ok", "redis": "unreachable"}
    assert elapsed <= 3.5
    assert (await gateway.api.call("GET", "/health")).status == 200
    gateway.redis.restore()
    ready, _ = await gateway.timed("GET", "/ready")
    assert ready.status == 200, ready.body
