"""`GET …/executions/{id}/history` over events nested too deeply to answer, written straight to
the event store (as older versions let them in, bypassing today's depth limit): the gateway's
real application on the real PostgreSQL answers 200, each such event's data
`{"$unrenderable": "nested too deep"}`, the others as usual; tenancy still holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent
from stack import Roles, eventually

from commands import models as m
from domain.execution import Execution
from gateways.bootstrap import Container, bootstrap
from gateways.http.app import make_app
from gateways.http.tokens import issue_access_token
from infra.eventlog import head_position
from infra.settings import Settings
from projections.queries import projector_position

DEFINITION: dict[str, Any] = {
    "name": "wait",
    "nodes": [{"id": "wait", "type": "delay", "config": {"seconds": 3600}}],
    "edges": [],
}
UNRENDERABLE = {"$unrenderable": "nested too deep"}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
async def gateway(fresh_settings: Settings) -> AsyncIterator[tuple[TestClient, Container]]:
    # A database of its own: the events these tests write are too deep to decode, and would
    # reach the consumers of other tests sharing the suite's database.
    container = await bootstrap(fresh_settings)
    try:
        async with TestClient(TestServer(make_app(container))) as client:
            yield client, container
    finally:
        await container.close()


async def member(container: Container) -> tuple[str, dict[str, str]]:
    """A new user's workspace and an access token for it."""
    email = f"h-{uuid4().hex[:10]}@example.com"
    result = await container.bus.execute(
        m.RegisterUser(email=email, password="correct horse", name="H")
    )
    token, _ = issue_access_token(container.settings, UUID(result.fields["user"]["id"]))
    return result.fields["workspace"]["id"], {"Authorization": f"Bearer {token}"}


def start_directly(container: Container, workspace: str, input: Any) -> Execution:
    """An execution saved through the event store itself, not the API (no depth check)."""
    execution = Execution.start(
        uuid4(), workspace, str(uuid4()), 1, DEFINITION, input, datetime.now(UTC)
    )
    container.store.append(execution)
    return execution


async def history(client: TestClient, workspace: str, execution: UUID, headers: Any) -> Any:
    path = f"/api/v1/workspaces/{workspace}/executions/{execution}/history"
    resp = await client.get(path, headers=headers)
    return resp.status, await resp.json()


@pytest.mark.parametrize("depth", [495, 900])
async def test_input_nested_hundreds_of_levels_is_answered_unrenderable(
    gateway: tuple[TestClient, Container], depth: int
) -> None:
    client, container = gateway
    workspace, headers = await member(container)
    execution = start_directly(container, workspace, {"deep": nested(depth)})
    status, body = await history(client, workspace, execution.id, headers)
    assert status == 200, body
    assert [e["type"] for e in body] == ["ExecutionStarted", "NodeScheduled", "TimerScheduled"]
    assert body[0]["data"] == UNRENDERABLE
    assert body[0]["recorded_at"]
    assert body[1]["data"]["node_id"] == "wait"  # the others as usual


async def test_an_event_too_deep_to_decode_is_answered_from_its_envelope(
    gateway: tuple[TestClient, Container],
) -> None:
    """Its state nests 5,000 levels: the decoder itself gives up on it."""
    client, container = gateway
    workspace, headers = await member(container)
    execution = start_directly(container, workspace, {"shallow": True})
    version = execution.version + 1
    state = (
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-02T03:04:05+00:00"},'
        b'"workspace_id":"' + workspace.encode() + b'","node_id":"wait","attempt":1,'
        b'"output":{"x":"}]",' + b'"y":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    )
    topic = "domain.execution:Execution.NodeCompleted"
    container.store.recorder.insert_events([StoredEvent(execution.id, version, topic, state)])

    status, body = await history(client, workspace, execution.id, headers)
    assert status == 200, body
    assert body[-1] == {
        "version": version,
        "type": "NodeCompleted",
        "recorded_at": "2026-01-02T03:04:05+00:00",
        "data": UNRENDERABLE,
    }
    assert body[0]["data"]["input"] == {"shallow": True}

    other, other_headers = await member(container)  # another workspace sees nothing
    status, _ = await history(client, other, execution.id, other_headers)
    assert status == 404

    # The consumers skip it (logged, counted) instead of stopping on it for good: here the
    # projector, which decodes every execution event, reaches the head of the log.
    running = Roles(container)
    running.start("projector")
    try:
        await eventually(lambda: _projector_at_head(container), timeout=15)
    finally:
        await running.stop_all()


async def _projector_at_head(container: Container) -> bool:
    async with container.pool.connection() as conn:
        head = await head_position(conn)
        position = await projector_position(conn)
        await conn.commit()
    return position >= head
