"""The event store and command handlers on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest
from examples import load_example

from commands import models as m
from commands.bus import CommandBus
from commands.handlers import NotFound
from domain.base import DomainError
from domain.definition import DefinitionInvalid
from domain.execution import Execution
from domain.limits import Limits
from domain.workflow import Workflow
from infra.aggregate_cache import BoundedCache
from infra.eventstore import EventStore, WrongAggregate
from infra.settings import Settings


@pytest.fixture(scope="module")
def bus(settings: Settings) -> CommandBus:
    bus = CommandBus(EventStore(settings), threads=8)
    yield bus
    bus.close()


def new_workspace(bus: CommandBus) -> tuple[UUID, UUID]:
    result = bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    return UUID(result.fields["user"]["id"]), UUID(result.fields["workspace"]["id"])


def new_workflow(bus: CommandBus, ws: UUID, user: UUID, example: str) -> UUID:
    result = bus.handle(
        m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=load_example(example))
    )
    return UUID(result.fields["id"])


def test_register_twice_with_one_email_is_refused(bus: CommandBus) -> None:
    email = f"{uuid4().hex[:8]}@Example.com"
    bus.handle(m.RegisterUser(email=email, password="s3cret-pass", name="A"))
    with pytest.raises(DomainError) as exc:
        bus.handle(m.RegisterUser(email=email.lower(), password="other-pass", name="B"))
    assert exc.value.code == "email_taken"


def test_saved_aggregates_load_back_equal_with_increasing_positions(bus: CommandBus) -> None:
    user, ws = new_workspace(bus)
    created = bus.handle(
        m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=load_example("timeout.json"))
    )
    started = bus.handle(
        m.StartExecution(workspace_id=ws, workflow_id=UUID(created.fields["id"]), input={"a": 1})
    )
    assert started.position > created.position > 0
    execution = bus.store.copy_fresh(Execution, started.execution_id)
    assert execution.input == {"a": 1} and execution.workspace_id == str(ws)
    assert execution.nodes["slow"].status == "scheduled"


def test_idempotency_key_names_one_execution(bus: CommandBus) -> None:
    user, ws = new_workspace(bus)
    wf = new_workflow(bus, ws, user, "timeout.json")
    cmd = m.StartExecution(workspace_id=ws, workflow_id=wf, input={"x": 1}, idempotency_key="k1")
    first = bus.handle(cmd)
    again = bus.handle(cmd)
    assert first.execution_id == again.execution_id
    assert again.position == first.position
    with pytest.raises(DomainError) as exc:
        bus.handle(cmd.model_copy(update={"input": {"x": 2}}))
    assert exc.value.code == "idempotency_key_reused"


async def test_concurrent_results_for_one_execution_are_all_kept(bus: CommandBus) -> None:
    """Two workers answer the two branches of a join at the same moment, many times over:
    conflicts are retried by the bus, never lost and never surfaced."""
    user, ws = new_workspace(bus)
    wf = new_workflow(bus, ws, user, "fan-out-join.json")
    ids = [
        bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf, input={})).execution_id
        for _ in range(20)
    ]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(8) as pool:
        jobs = []
        for ex in ids:
            for node, price in (("a", 3), ("b", 6)):
                cmd = m.CompleteNode(
                    execution_id=ex, node_id=node, attempt=1, output={"body": {"price": price}}
                )
                jobs.append(loop.run_in_executor(pool, bus.handle, cmd))
        results = await asyncio.gather(*jobs)
    assert all(r.accepted for r in results)
    for ex in ids:
        execution = bus.store.copy_fresh(Execution, ex)
        assert execution.status == "completed"
        assert execution.output == {"total": 9}


def test_other_workspace_cannot_touch_a_workflow(bus: CommandBus) -> None:
    from commands.handlers import NotFound

    user, ws = new_workspace(bus)
    wf = new_workflow(bus, ws, user, "timeout.json")
    _, other_ws = new_workspace(bus)
    with pytest.raises(NotFound):
        bus.handle(m.StartExecution(workspace_id=other_ws, workflow_id=wf))
    with pytest.raises(NotFound):
        bus.handle(m.ArchiveWorkflow(workspace_id=other_ws, workflow_id=wf))


def test_the_aggregate_cache_is_bounded_by_bytes_from_the_settings(settings: Settings) -> None:
    store = EventStore(settings.model_copy(update={"aggregate_cache_bytes": 12_345}))
    try:
        assert isinstance(store.repository.cache, BoundedCache)
        assert store.repository.cache.max_bytes == 12_345
    finally:
        store.close()


def test_an_id_of_another_kind_is_not_found_but_a_type_error_is_not_taken_for_it(
    bus: CommandBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: `TypeError` was the signal for "wrong aggregate class", so a real TypeError
    while loading (in an event's apply, in a copy) was answered as 404. Now an id of another
    kind raises `WrongAggregate` (answered NotFound), and a TypeError is an error."""
    user, ws = new_workspace(bus)
    wf = new_workflow(bus, ws, user, "timeout.json")
    with pytest.raises(NotFound):  # a workflow's id where an execution's is expected
        bus.handle(m.CancelExecution(workspace_id=ws, execution_id=wf, reason="x"))
    with pytest.raises(WrongAggregate):
        bus.store.read_fresh(Execution, wf)

    def broken_copy(self: Workflow, memo: dict[int, object]) -> Workflow:
        raise TypeError("a bug while copying")

    monkeypatch.setattr(Workflow, "__deepcopy__", broken_copy, raising=False)
    with pytest.raises(TypeError, match="a bug while copying"):
        bus.handle(m.ArchiveWorkflow(workspace_id=ws, workflow_id=wf))


def test_the_limits_given_to_the_bus_reach_the_handlers(settings: Settings) -> None:
    limited = CommandBus(EventStore(settings), threads=1, limits=Limits(max_nodes=1))
    try:
        user, ws = new_workspace(limited)
        two = {
            "name": "two nodes",
            "nodes": [
                {"id": "a", "type": "transform", "config": {"set": {"x": 1}}},
                {"id": "b", "type": "transform", "config": {"set": {"y": 2}}},
            ],
            "edges": [{"source": "a", "target": "b"}],
        }
        with pytest.raises(DefinitionInvalid):
            limited.handle(m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=two))
    finally:
        limited.close()
        limited.store.close()
