"""Commands decided on aggregates a process holds in memory (`CommandContext.load` inside the bus,
asking PostgreSQL nothing), on the real PostgreSQL, with two event stores standing for two
processes (a worker and a gateway): a save on state that moved on conflicts and is decided
again; so is a command that saved nothing; a held aggregate costs no query; and a start on held
state runs on the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from commands import models as m
from commands.bus import CommandBus
from commands.handlers import Decision, ExecutionAnswer
from domain.execution import Execution
from infra.eventstore import EventStore
from infra.group_commit import NO_READS
from infra.settings import Settings

TWO_CALLS = {
    "name": "two calls",
    "nodes": [
        {"id": "one", "type": "http_request", "config": {"url": "http://127.0.0.1:9/1"}},
        {
            "id": "two",
            "type": "http_request",
            "config": {"url": "http://127.0.0.1:9/2"},
            "retry": {"max_attempts": 2, "initial_interval_s": 0.01},
        },
    ],
    "edges": [{"source": "one", "target": "two"}],
}


class Process:
    """An event store and a bus of its own, like one LinkFlow process."""

    def __init__(self, settings: Settings) -> None:
        self.store = EventStore(settings)
        self.bus = CommandBus(self.store, threads=2)
        self.selects = 0
        original = self.store.recorder.select_events

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.selects += 1
            return original(*args, **kwargs)

        self.store.recorder.select_events = counting  # type: ignore[method-assign]

    def count_threaded(self) -> list[str]:
        """From now on, record the commands the bus runs in a thread (`handle`)."""
        threaded: list[str] = []
        original = self.bus.handle

        def counting(cmd: m.Command, reads: Any = NO_READS, *rest: Any) -> Any:
            threaded.append(type(cmd).__name__)
            return original(cmd, reads, *rest)

        self.bus.handle = counting  # type: ignore[method-assign]
        return threaded

    def run(self, cmd: m.Command) -> dict[str, Any]:
        """The command's answer as a dict: a decision's and a start's fields, else `fields`."""
        result = self.bus.handle(cmd)
        if isinstance(result, Decision):
            return {"accepted": result.accepted, "status": result.status}
        if isinstance(result, ExecutionAnswer):
            return {"execution_id": str(result.execution_id), "status": result.status}
        return result.fields

    def close(self) -> None:
        self.bus.close()
        self.store.close()


@pytest.fixture
def two(settings: Settings) -> Iterator[tuple[Process, Process]]:
    worker, gateway = Process(settings), Process(settings)
    yield worker, gateway
    worker.close()
    gateway.close()


def started(gateway: Process) -> UUID:
    reg = gateway.run(
        m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pass", name="T")
    )
    user, ws = UUID(reg["user"]["id"]), UUID(reg["workspace"]["id"])
    wf = gateway.run(m.CreateWorkflow(workspace_id=ws, actor_id=user, definition=TWO_CALLS))["id"]
    cmd = m.StartExecution(workspace_id=ws, workflow_id=UUID(wf), input={})
    return UUID(gateway.run(cmd)["execution_id"])


def complete(node: str, execution: UUID, attempt: int = 1) -> m.CompleteNode:
    return m.CompleteNode(execution_id=execution, node_id=node, attempt=attempt, output={})


def test_a_held_aggregate_is_decided_on_without_a_query(two: tuple[Process, Process]) -> None:
    worker, gateway = two
    execution = started(gateway)
    assert worker.run(complete("one", execution))["accepted"] is True  # loads it: held now
    before = worker.selects
    assert worker.run(complete("two", execution)) == {"accepted": True, "status": "completed"}
    assert worker.selects == before


def test_a_save_on_state_that_moved_on_is_decided_again(two: tuple[Process, Process]) -> None:
    worker, gateway = two
    execution = started(gateway)
    worker.run(complete("one", execution))  # held, node "two" running
    workspace = UUID(gateway.store.copy_fresh(Execution, execution).workspace_id)
    gateway.run(m.CancelExecution(workspace_id=workspace, execution_id=execution))
    # On the held state the completion is accepted; its save conflicts with the cancel, and
    # on fresh state it is refused.
    assert worker.run(complete("two", execution)) == {"accepted": False, "status": "canceled"}
    history = gateway.store.copy_fresh(Execution, execution)
    assert history.status == "canceled" and history.nodes["two"].status != "completed"


def test_a_refusal_on_held_state_is_decided_again(two: tuple[Process, Process]) -> None:
    worker, gateway = two
    execution = started(gateway)
    worker.run(complete("one", execution))  # held: node "two" at attempt 1
    error = {"type": "http_status", "message": "HTTP 500"}
    gateway.run(m.FailNode(execution_id=execution, node_id="two", attempt=1, error=error))
    [timer] = gateway.store.copy_fresh(Execution, execution).timers
    gateway.run(m.FireTimer(execution_id=execution, timer_id=timer))  # attempt 2 scheduled
    # The held state knows no attempt 2: refused there, accepted on fresh state.
    assert worker.run(complete("two", execution, attempt=2)) == {
        "accepted": True,
        "status": "completed",
    }


async def test_a_start_on_held_state_runs_on_the_event_loop(settings: Settings) -> None:
    gateway = Process(settings)
    try:
        execution = started(gateway)
        workflow = UUID(gateway.store.copy_fresh(Execution, execution).workflow_id)
        workspace = UUID(gateway.store.copy_fresh(Execution, execution).workspace_id)
        threaded = gateway.count_threaded()
        gateway.store.forget([workflow])
        start = m.StartExecution(workspace_id=workspace, workflow_id=workflow, input={})
        first = await gateway.bus.execute(start)  # not held: in a thread, which loads it
        assert threaded == ["StartExecution"]
        second = await gateway.bus.execute(start)
        assert threaded == ["StartExecution"]  # decided and saved from the event loop
        second_id = second.execution_id
        assert second.position > first.position > 0
        assert gateway.store.position_of(second_id) == second.position
        assert [type(e).__name__ for e in second.saved][0] == "ExecutionStarted"
        keyed = start.model_copy(update={"idempotency_key": "k"})
        await gateway.bus.execute(keyed)
        assert threaded == ["StartExecution", "StartExecution"]  # keyed starts: in a thread
    finally:
        gateway.close()


async def test_a_result_for_a_held_execution_is_recorded_from_the_event_loop(
    two: tuple[Process, Process],
) -> None:
    worker, gateway = two
    execution = started(gateway)
    threaded = worker.count_threaded()
    first = await worker.bus.execute(complete("one", execution))  # not held: in a thread
    assert (threaded, first.accepted) == (["CompleteNode"], True)
    second = await worker.bus.execute(complete("two", execution))
    assert threaded == ["CompleteNode"]  # held: decided and saved from the event loop
    assert (second.accepted, second.status) == (True, "completed")
    assert gateway.store.position_of(execution) == second.position
    repeat = await worker.bus.execute(complete("two", execution))  # refused on held state:
    assert threaded == ["CompleteNode", "CompleteNode"]  # decided again in a thread
    assert repeat.accepted is False
