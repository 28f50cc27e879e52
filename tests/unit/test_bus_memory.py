"""The command bus and its handlers on an event store in memory (`EventStore(settings,
memory=True)`), without PostgreSQL: commands through the bus's public surface
(`CommandBus.handle` / `CommandBus.execute`, `Result`), conflicts and stale reads retried on
fresh reads, a stale read of the caller's own `reads` ending the command.
tests/integration/test_event_store.py runs such commands on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from examples import load_example

from commands import models as m
from commands.bus import CommandBus
from commands.handlers import Result
from domain.base import DomainError
from domain.execution import Execution
from domain.workflow import Workflow
from infra.eventstore import EventStore
from infra.recorder import StaleRead
from infra.settings import Settings

NOWHERE = Settings(pg_host="192.0.2.1", pg_port=1)  # no PostgreSQL may be asked anything
WAIT_S = 10.0


@pytest.fixture
def bus() -> Iterator[CommandBus]:
    command_bus = CommandBus(EventStore(NOWHERE, memory=True), threads=4)
    yield command_bus
    command_bus.close()
    command_bus.store.close()


def new_workspace(bus: CommandBus) -> tuple[UUID, UUID]:
    result = bus.handle(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    return UUID(result.fields["user"]["id"]), UUID(result.fields["workspace"]["id"])


def new_workflow(bus: CommandBus, example: str) -> tuple[UUID, UUID]:
    """A new workspace's id and the id of a workflow created in it from the example."""
    user, ws = new_workspace(bus)
    result = bus.handle(
        m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=load_example(example))
    )
    return ws, UUID(result.fields["id"])


def published_elsewhere(store: EventStore, workflow_id: UUID) -> None:
    """Another process publishes a new version of the workflow: its event reaches the log, not
    what this process holds."""
    workflow = store.copy_fresh(Workflow, workflow_id)
    workflow.publish_version(load_example("timeout.json"), datetime.now(UTC))
    store.recorder.insert_events(
        [store.mapper.to_stored_event(e) for e in workflow.collect_events()]
    )


def refusals(store: EventStore) -> list[BaseException]:
    """The appends the recorder refuses from now on, recorded."""
    refused: list[BaseException] = []
    insert = store.recorder.insert_events

    def recording(events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        try:
            return insert(events, **kwargs)
        except Exception as exc:
            refused.append(exc)
            raise

    store.recorder.insert_events = recording  # type: ignore[method-assign]
    return refused


def test_register_create_and_start_through_the_bus(bus: CommandBus) -> None:
    user, ws = new_workspace(bus)
    created = bus.handle(
        m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=load_example("timeout.json"))
    )
    started = bus.handle(
        m.StartExecution(workspace_id=ws, workflow_id=UUID(created.fields["id"]), input={"a": 1})
    )
    assert isinstance(started, Result)
    assert started.position > created.position > 0
    execution_id = started.execution_id
    assert started.position == bus.store.position_of(execution_id)
    assert [type(e).__name__ for e in started.saved] == ["ExecutionStarted", "NodeScheduled"]
    execution = bus.store.copy_fresh(Execution, execution_id)
    assert execution.input == {"a": 1} and execution.workspace_id == str(ws)
    assert execution.nodes["slow"].status == "scheduled"


def test_register_twice_with_one_email_is_refused(bus: CommandBus) -> None:
    """The second registration's email index exists: the recorder's IntegrityError, which the
    handler answers as the domain's refusal."""
    email = f"{uuid4().hex[:8]}@Example.com"
    bus.handle(m.RegisterUser(email=email, password="s3cret-pass", name="A"))
    with pytest.raises(DomainError) as exc:
        bus.handle(m.RegisterUser(email=email.lower(), password="other-pass", name="B"))
    assert exc.value.code == "email_taken"


def test_an_idempotency_key_names_one_execution(bus: CommandBus) -> None:
    ws, wf = new_workflow(bus, "timeout.json")
    cmd = m.StartExecution(workspace_id=ws, workflow_id=wf, input={"x": 1}, idempotency_key="k1")
    first = bus.handle(cmd)
    again = bus.handle(cmd)
    assert again.execution_id == first.execution_id
    assert again.repeated is True
    assert again.position == first.position  # the recorder's position_of
    with pytest.raises(DomainError) as exc:
        bus.handle(cmd.model_copy(update={"input": {"x": 2}}))
    assert exc.value.code == "idempotency_key_reused"


def test_a_start_decided_on_a_stale_workflow_runs_again_on_fresh_reads(bus: CommandBus) -> None:
    ws, wf = new_workflow(bus, "fan-out-join.json")
    bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf))  # the workflow is held now
    published_elsewhere(bus.store, wf)
    refused = refusals(bus.store)
    started = bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf))
    [stale] = refused  # decided on the held version 1 once: its save was refused
    assert isinstance(stale, StaleRead) and wf in stale.ids
    execution = bus.store.copy_fresh(Execution, started.execution_id)
    assert execution.workflow_version == 2  # decided again on the workflow as it is
    assert list(execution.nodes) == ["slow"]


async def test_a_start_on_the_event_loop_decided_on_a_stale_workflow_runs_again(
    bus: CommandBus,
) -> None:
    ws, wf = new_workflow(bus, "fan-out-join.json")
    first = await bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf))
    published_elsewhere(bus.store, wf)
    refused = refusals(bus.store)
    started = await bus.execute(m.StartExecution(workspace_id=ws, workflow_id=wf))
    assert refused and all(isinstance(r, StaleRead) for r in refused)
    assert started.position > first.position
    execution = bus.store.copy_fresh(Execution, started.execution_id)
    assert execution.workflow_version == 2
    assert started.saved and started.position == bus.store.position_of(execution.id)


def test_a_stale_read_the_caller_made_ends_the_command(bus: CommandBus) -> None:
    """A version the caller read (`reads`) cannot be read again by the bus: StaleRead reaches
    the caller, and nothing is written."""
    ws, wf = new_workflow(bus, "timeout.json")
    version = bus.store.copy_fresh(Workflow, wf).version
    published_elsewhere(bus.store, wf)
    last = bus.store.recorder.max_notification_id()
    with pytest.raises(StaleRead) as refused:
        bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf), reads={wf: version})
    assert refused.value.ids == [wf]
    assert bus.store.recorder.max_notification_id() == last
    # With the version as it is now, the same start goes through.
    current = bus.store.copy_fresh(Workflow, wf).version
    again = bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf), reads={wf: current})
    assert again.position > last


def test_two_results_for_one_execution_conflict_and_both_are_kept(bus: CommandBus) -> None:
    """Two workers answer the two branches of a join at once: both commands load the execution
    at the same version before either saves, so one save conflicts; the bus runs that one again
    on a fresh load."""
    ws, wf = new_workflow(bus, "fan-out-join.json")
    started = bus.handle(m.StartExecution(workspace_id=ws, workflow_id=wf, input={}))
    execution_id = started.execution_id
    store = bus.store
    both_loaded = threading.Barrier(2, timeout=WAIT_S)
    loads: list[int] = []
    lock = threading.Lock()
    copy_held, copy_fresh = store.copy_held, store.copy_fresh

    def together(copy: Callable[..., Any]) -> Callable[..., Any]:
        """A command's copy of the execution (held, or fresh), once both commands have one."""

        def copying(cls: Any, aggregate_id: UUID, *args: Any, **kwargs: Any) -> Any:
            aggregate = copy(cls, aggregate_id, *args, **kwargs)
            if aggregate is None or aggregate_id != execution_id:
                return aggregate
            with lock:
                loads.append(aggregate.version)
                first_two = len(loads) <= 2
            if first_two:
                both_loaded.wait()
            return aggregate

        return copying

    store.copy_held = together(copy_held)  # type: ignore[method-assign]
    store.copy_fresh = together(copy_fresh)  # type: ignore[method-assign]
    refused = refusals(store)
    commands = [
        m.CompleteNode(
            execution_id=execution_id, node_id=node, attempt=1, output={"body": {"price": price}}
        )
        for node, price in (("a", 3), ("b", 6))
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(bus.handle, commands))
    assert all(r.accepted for r in results)
    assert loads[0] == loads[1] and len(loads) == 3  # the loser loaded once more, fresh
    assert loads[2] > loads[0]  # with the winner's events
    assert len(refused) == 1  # the loser's first save
    execution = copy_fresh(Execution, execution_id)
    assert execution.status == "completed"
    assert execution.output == {"total": 9}
