"""engine.held_tasks: the order matching lets held tasks go (no I/O)."""

from __future__ import annotations

from uuid import uuid4

from engine.held_tasks import HeldTasks
from engine.tasks import TaskMessage


def task(workspace: str, n: int, queue: str = "default", priority: int = 3) -> TaskMessage:
    return TaskMessage(
        priority=priority,
        task_id=f"{workspace}-{n}",
        execution_id=uuid4(),
        workspace_id=workspace,
        node_id="call",
        attempt=1,
        queue=queue,
        type="http_request",
        config={},
    )


def test_a_flooding_workspace_takes_turns_with_the_others() -> None:
    held = HeldTasks()
    held.add(task("a", n) for n in range(1000))
    held.add([task("b", 0), task("b", 1)])
    held.add([task("c", 0)])
    first = [t.task_id for t in held.take("default", 6)]
    assert first == ["a-0", "b-0", "c-0", "a-1", "b-1", "a-2"]
    assert [t.task_id for t in held.take("default", 2)] == ["a-3", "a-4"]
    assert len(held) == 1000 - 5


def test_queues_are_held_apart() -> None:
    held = HeldTasks()
    held.add([task("a", 0, "default"), task("a", 1, "bulk")])
    assert sorted(held.queues()) == ["bulk", "default"]
    assert [t.task_id for t in held.take("bulk", 10)] == ["a-1"]
    assert held.queues() == ["default"]
    assert held.take("bulk", 10) == []


def test_a_task_that_ended_while_held_is_never_handed_out() -> None:
    held = HeldTasks()
    held.add([task("a", 0), task("a", 1), task("b", 0)])
    held.discard(["a-0", "b-0", "unknown"])
    assert "a-0" not in held
    assert [t.task_id for t in held.take("default", 10)] == ["a-1"]
    assert len(held) == 0 and held.queues() == []


def test_adding_a_task_twice_holds_it_once() -> None:
    held = HeldTasks()
    held.add([task("a", 0)])
    held.add([task("a", 0)])
    assert held.count("default") == 1


def test_within_a_workspace_higher_priorities_go_first_oldest_first() -> None:
    held = HeldTasks()
    held.add([task("a", 0, priority=5), task("a", 1, priority=3), task("a", 2, priority=1)])
    held.add([task("a", 3, priority=1), task("b", 0, priority=5)])
    taken = [t.task_id for t in held.take("default", 5)]
    # Workspaces still take turns: b's priority-5 task is not behind a's priority-1 tasks.
    assert taken == ["a-2", "b-0", "a-3", "a-1", "a-0"]
    assert len(held) == 0 and held.queues() == []


def test_a_discarded_task_leaves_its_priority() -> None:
    held = HeldTasks()
    held.add([task("a", 0, priority=1), task("a", 1, priority=5)])
    held.discard(["a-0"])
    assert held.count("default") == 1
    assert [t.task_id for t in held.take("default", 5)] == ["a-1"]
    held.add([task("a", 2, priority=2)])
    held.discard(["a-2"])
    assert len(held) == 0 and held.queues() == []
