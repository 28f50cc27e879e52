"""Matching: turns `NodeScheduled` events that carry a task into messages on the task stream of
the node's queue (`tasks:<queue>`, group `workers`), and keeps the outstanding tasks in
`engine_tasks` until the node's attempt ends, so that tasks Redis lost are published again.

Order of effects for a batch: XADD the tasks, then commit the rows and the position, then XACK.
A crash in between republishes (workers and the Execution aggregate ignore repeats); nothing is
lost. When Redis loses its data (epoch changed), every outstanding task is published again.
Consumer group / position: `matching`.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from domain.execution import Execution
from engine.tasks import TaskMessage, task_for, task_id
from infra import metrics
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.logging import get_logger, log_event
from infra.settings import Settings
from infra.streams import WORKER_GROUP, control_channel, ensure_group, task_stream

log = get_logger(__name__)

_ATTEMPT_ENDED = (
    Execution.NodeCompleted,
    Execution.NodeFailed,
    Execution.NodeTimedOut,
    Execution.NodeCanceled,
)


class Matching(EventConsumer):
    name = "matching"

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.queues_ready: set[str] = set()

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        tasks = []
        for _, event in events:
            if isinstance(event, Execution.NodeScheduled) and event.task is not None:
                tasks.append(task_for(event))
            elif isinstance(event, _ATTEMPT_ENDED):
                await conn.execute(
                    "DELETE FROM engine_tasks WHERE task_id = %s",
                    (task_id(event.originator_id, event.node_id, event.attempt),),
                )
        if tasks:
            await self.publish(tasks)
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO engine_tasks (task_id, execution_id, workspace_id, queue,"
                    " payload) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (task_id) DO NOTHING",
                    [
                        (
                            t.task_id,
                            t.execution_id,
                            t.workspace_id,
                            t.queue,
                            Jsonb(t.model_dump(mode="json")),
                        )
                        for t in tasks
                    ],
                )
        # Executions that ended leave no outstanding task behind (e.g. a canceled one's nodes).
        closed = [
            event.originator_id
            for _, event in events
            if isinstance(
                event,
                Execution.ExecutionCompleted
                | Execution.ExecutionFailed
                | Execution.ExecutionCanceled
                | Execution.ExecutionTimedOut,
            )
        ]
        if closed:
            await conn.execute("DELETE FROM engine_tasks WHERE execution_id = ANY(%s)", (closed,))

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        """Tell workers to stop running attempts that were canceled (best effort: a result that
        arrives anyway is ignored by the Execution)."""
        canceled = [
            task_id(event.originator_id, event.node_id, event.attempt)
            for _, event in events
            if isinstance(event, Execution.NodeCanceled)
        ]
        if canceled:
            await self.broker.publish({"cancel": canceled}, channel=control_channel(self.settings))

    async def publish(self, tasks: list[TaskMessage]) -> None:
        for queue in {t.queue for t in tasks} - self.queues_ready:
            # The workers' group exists before its first task, so no task is ever skipped.
            await ensure_group(self.redis, task_stream(self.settings, queue), WORKER_GROUP)
            self.queues_ready.add(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.xadd(task_stream(self.settings, task.queue), {"task": task.model_dump_json()})
            await pipe.execute()
        for task in tasks:
            metrics.TASKS_DISPATCHED.labels(task.queue).inc()

    async def republish_outstanding(self) -> int:
        """After Redis lost its data: publish every task whose attempt has not ended."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT payload FROM engine_tasks ORDER BY created_at")
            rows = await cur.fetchall()
            await conn.commit()
        tasks = [TaskMessage.model_validate(row["payload"] | {"republished": True}) for row in rows]
        self.queues_ready.clear()
        for start in range(0, len(tasks), 500):
            await self.publish(tasks[start : start + 500])
        if tasks:
            log_event(log, "tasks_republished", count=len(tasks))
        return len(tasks)
