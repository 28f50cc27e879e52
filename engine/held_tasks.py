"""The tasks matching holds back while their queue's stream is full, and the order it lets them
go in: round-robin across workspaces, so that one workspace's flood does not starve another's
tasks; within a workspace, by priority (1 first: the execution's `settings.priority` or its
start's `priority`), oldest first within a priority. In memory only: `engine_tasks` rows
without an entry id are the durable copy (their payload keeps the priority), loaded again when
matching starts.

Imported by `engine.matching`; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

from engine.tasks import TaskMessage


class _Queue:
    def __init__(self) -> None:
        # A workspace's held tasks by priority (1 first), each oldest first.
        self.by_workspace: dict[str, dict[int, OrderedDict[str, TaskMessage]]] = {}
        self.turns: deque[str] = deque()  # workspaces with held tasks, whose turn is next first

    def add(self, task: TaskMessage) -> None:
        levels = self.by_workspace.get(task.workspace_id)
        if levels is None:
            levels = self.by_workspace[task.workspace_id] = {}
            self.turns.append(task.workspace_id)
        levels.setdefault(task.priority, OrderedDict())[task.task_id] = task

    def take(self, n: int) -> list[TaskMessage]:
        taken: list[TaskMessage] = []
        while len(taken) < n and self.turns:
            workspace = self.turns.popleft()
            levels = self.by_workspace[workspace]
            first = min(levels)
            taken.append(levels[first].popitem(last=False)[1])
            if not levels[first]:
                del levels[first]
            if levels:
                self.turns.append(workspace)
            else:
                del self.by_workspace[workspace]
        return taken

    def discard(self, task: TaskMessage) -> None:
        levels = self.by_workspace.get(task.workspace_id)
        tasks = levels.get(task.priority) if levels is not None else None
        if levels is None or tasks is None or tasks.pop(task.task_id, None) is None:
            return
        if not tasks:
            del levels[task.priority]
        if not levels:
            del self.by_workspace[task.workspace_id]
            self.turns.remove(task.workspace_id)

    def __len__(self) -> int:
        return sum(len(tasks) for levels in self.by_workspace.values() for tasks in levels.values())


class HeldTasks:
    """Held tasks by queue; `take` hands out up to n of a queue's, one workspace at a time, each
    workspace's highest priority first."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._held: dict[str, TaskMessage] = {}  # by task id

    def add(self, tasks: Iterable[TaskMessage]) -> None:
        for task in tasks:
            if task.task_id not in self._held:
                self._held[task.task_id] = task
                self._queues.setdefault(task.queue, _Queue()).add(task)

    def take(self, queue: str, n: int) -> list[TaskMessage]:
        held = self._queues.get(queue)
        if held is None:
            return []
        taken = held.take(n)
        for task in taken:
            del self._held[task.task_id]
        if not held.turns:
            del self._queues[queue]
        return taken

    def discard(self, task_ids: Iterable[str]) -> None:
        """Forget tasks whose attempt ended (or whose execution closed) while held."""
        for task_id in task_ids:
            task = self._held.pop(task_id, None)
            if task is None:
                continue
            held = self._queues[task.queue]
            held.discard(task)
            if not held.turns:
                del self._queues[task.queue]

    def queues(self) -> list[str]:
        return list(self._queues)

    def workspaces(self, queue: str) -> set[str]:
        """The workspaces with tasks held on `queue`."""
        held = self._queues.get(queue)
        return set(held.by_workspace) if held is not None else set()

    def count(self, queue: str) -> int:
        held = self._queues.get(queue)
        return len(held) if held is not None else 0

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._held

    def __len__(self) -> int:
        return len(self._held)
