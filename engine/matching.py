"""Matching: turns `NodeScheduled` events that carry a task into messages on the task stream of
the node's queue (`tasks:<queue>`, group `workers`), and keeps the outstanding tasks in
`engine_tasks` until the node's attempt ends, so that tasks Redis lost are published again.

Order of effects for a batch: learn which tasks the fast path sent (their claims), then commit
the rows and the position, then XACK. A task the fast path did not send (the queue's backlog was
full, or matching held tasks of that queue back: see `engine.dispatch`; or the process crashed
between its commit and the send) is *held*: its row has no entry id, and the feed loop sends
held tasks as the stream's backlog has room, round-robin across workspaces
(`engine.held_tasks`), so that one workspace's flood does not starve another's tasks. A crash
in between republishes (workers and the Execution aggregate ignore repeats); nothing is lost.
An outstanding task whose stream entry vanished (Redis flushed or lost data) is published again:
at start, at once when the `epoch` key shows a flush, and by a periodic sweep.
Matching keeps the task ids of `engine_tasks` in memory (loaded at start, and again when another
process moved its position), so that the endings of attempts it never dispatched (inline nodes)
and closings of executions without an outstanding task are neither decoded nor applied.
Consumer group / position: `matching`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg.types.json import Jsonb

from domain.execution import EXECUTION_CLOSED, Execution
from engine.dispatch import ATTEMPT_ENDED, Dispatcher
from engine.held_tasks import HeldTasks
from engine.tasks import TaskMessage, task_for, task_id
from infra import metrics
from infra.consumer import EventConsumer
from infra.db import DictConnection
from infra.eventlog import LoggedEvent
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES, REDIS
from infra.settings import Settings
from infra.streams import control_channel, task_stream

log = get_logger(__name__)

# A workspace stays held this long after its last held task went out: a flood that the feed
# keeps up with would otherwise win the fast path back at each lull and fill the whole backlog.
HOLD_LINGER_S = 2.0
HOLD_REFRESH_S = 1.0  # the `held:…` keys live HELD_TTL_S (5 s): refreshed well before

_SCHEDULED = get_topic(Execution.NodeScheduled)


class Matching(EventConsumer):
    name = "matching"
    handles = (Execution.NodeScheduled, *ATTEMPT_ENDED, *EXECUTION_CLOSED)
    # The fast path (engine.dispatch) sends tasks; matching records them and sends only what
    # it missed, so it can let entries gather: fewer batches, each a transaction. Not while it
    # holds tasks back: then the fast path sends nothing, and tasks wait for matching.
    linger_ms = 100
    holding_linger_ms = 0
    batch_entries = 50
    feed_interval_s = 0.01

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.dispatcher = Dispatcher(self.redis, settings)
        # The rows of engine_tasks, by execution: what an ended attempt or a closed execution
        # may have to delete. Events of executions with no outstanding task (every inline
        # node, every execution of a pure workflow) are then neither decoded nor applied.
        self.outstanding: dict[UUID, set[str]] = {}
        self.held = HeldTasks()
        # The `held:<queue>:<workspace>` keys set (engine.dispatch), and when they were last
        # set (they expire unless refreshed: a matching that died lets the fast path go).
        self.holding: dict[str, set[str]] = {}
        self.last_held: dict[tuple[str, str], float] = {}  # (queue, workspace) -> when
        self.holds_refreshed = 0.0
        self.fed = asyncio.Event()  # set when there are held tasks to feed
        self._changes: tuple[
            list[TaskMessage], list[TaskMessage], list[tuple[UUID, str]], list[UUID]
        ] = ([], [], [], [])

    async def prepare_state(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT task_id, execution_id, entry_id IS NULL AS held,"
                " CASE WHEN entry_id IS NULL THEN payload END AS payload"
                " FROM engine_tasks ORDER BY created_at"
            )
            rows = await cur.fetchall()
            await conn.commit()
        self.outstanding = {}
        self.held = HeldTasks()
        for row in rows:
            self.outstanding.setdefault(row["execution_id"], set()).add(row["task_id"])
        self.held.add(TaskMessage.model_validate(r["payload"]) for r in rows if r["held"])
        if self.held:
            self.fed.set()

    def decode_batch(self, events: list[LoggedEvent]) -> list[tuple[LoggedEvent, Any]]:
        """NodeScheduled events that carry a task; attempt endings and closings only of
        executions with a task outstanding or scheduled earlier in this batch."""
        wanted: list[tuple[LoggedEvent, Any]] = []
        with_tasks: set[UUID] = set()
        for e in events:
            if e.topic == _SCHEDULED:
                event = self.decode(e)
                if event.task is not None:
                    with_tasks.add(e.originator_id)
                    wanted.append((e, event))
            elif e.topic in self.topics and (
                e.originator_id in self.outstanding or e.originator_id in with_tasks
            ):
                wanted.append((e, self.decode(e)))
        return wanted

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        scheduled: dict[str, TaskMessage] = {}
        ended: list[tuple[UUID, str]] = []
        closed: set[UUID] = set()
        for _, event in events:
            if isinstance(event, Execution.NodeScheduled) and event.task is not None:
                task = task_for(event)
                scheduled[task.task_id] = task
            elif isinstance(event, ATTEMPT_ENDED):
                tid = task_id(event.originator_id, event.node_id, event.attempt)
                if scheduled.pop(tid, None) is None:  # ended within this batch: never dispatch
                    if tid in self.outstanding.get(event.originator_id, ()):
                        ended.append((event.originator_id, tid))
            elif isinstance(event, EXECUTION_CLOSED):
                closed.add(event.originator_id)
        tasks = [t for t in scheduled.values() if t.execution_id not in closed]
        held: list[TaskMessage] = []
        if tasks:
            # Usually the command's own process sent them already (engine.dispatch): then this
            # only learns their entry ids. The others are held, for the feed loop to send.
            entry_ids = await self.dispatcher.claimed(tasks)
            held = [t for t, entry in zip(tasks, entry_ids, strict=True) if entry is None]
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO engine_tasks (task_id, execution_id, workspace_id, queue,"
                    " payload, entry_id) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (task_id) DO NOTHING",
                    [
                        (t.task_id, t.execution_id, t.workspace_id, t.queue, _payload(t), entry)
                        for t, entry in zip(tasks, entry_ids, strict=True)
                    ],
                )
        if ended:
            await conn.execute(
                "DELETE FROM engine_tasks WHERE task_id = ANY(%b)", ([tid for _, tid in ended],)
            )
        # A closed execution leaves no outstanding task (e.g. a canceled one's nodes).
        emptied = [oid for oid in closed if oid in self.outstanding]
        if emptied:
            await conn.execute("DELETE FROM engine_tasks WHERE execution_id = ANY(%b)", (emptied,))
        self._changes = (tasks, held, ended, emptied)

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        """Follow the committed rows in `outstanding` and `held`; tell workers to stop running
        attempts that were canceled (best effort: a result that arrives anyway is ignored by
        the Execution)."""
        tasks, held, ended, emptied = self._changes
        self._changes = ([], [], [], [])
        for task in tasks:
            self.outstanding.setdefault(task.execution_id, set()).add(task.task_id)
        if held:
            self.held.add(held)
            self.fed.set()
            self.reader.linger_ms = self.holding_linger_ms
        for oid, tid in ended:
            remaining = self.outstanding.get(oid)
            self.held.discard([tid])
            if remaining is not None:
                remaining.discard(tid)
                if not remaining:
                    del self.outstanding[oid]
        for oid in emptied:
            self.held.discard(self.outstanding.pop(oid, ()))
        canceled = [
            task_id(event.originator_id, event.node_id, event.attempt)
            for _, event in events
            if isinstance(event, Execution.NodeCanceled)
        ]
        if canceled:
            await self.broker.publish({"cancel": canceled}, channel=control_channel(self.settings))

    async def feed_loop(self, stop: asyncio.Event) -> None:
        """Send held tasks as the streams' backlogs have room (every `feed_interval_s` while
        any is held), and keep the fast path off the workspaces with held tasks."""
        while not stop.is_set():
            if not self.held:
                await self._sync_holds()
                self.reader.linger_ms = self.holding_linger_ms if self.holding else self.linger_ms
                self.fed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.fed.wait(), timeout=1.0)
                continue
            with OUTAGES.guard("feed_failed", REDIS, logger=log):
                await self.feed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.feed_interval_s)

    async def feed(self) -> int:
        """One round: for each queue with held tasks, send as many as its backlog has room
        for, one workspace at a time; returns how many were sent."""
        sent = 0
        await self._sync_holds()
        for queue in self.held.queues():
            await self.dispatcher.ensure_queue(queue)
            room = await self.dispatcher.room(queue)
            tasks = self.held.take(queue, room) if room > 0 else []
            metrics.TASKS_HELD.labels(queue).set(self.held.count(queue))
            if not tasks:
                continue
            try:
                entry_ids = await self.dispatcher.dispatch(tasks, backlog=0)
            except Exception:
                self.held.add(tasks)  # sent or not, they go again (a claim answers a repeat)
                raise
            await self._record_sent(tasks, entry_ids)
            sent += len(tasks)
        await self._sync_holds()
        return sent

    async def _record_sent(self, tasks: list[TaskMessage], entry_ids: list[Any]) -> None:
        """The tasks' rows: sent now, as these stream entries."""
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE engine_tasks SET entry_id = %s, published_at = now()"
                    " WHERE task_id = %s",
                    [(entry, t.task_id) for t, entry in zip(tasks, entry_ids, strict=True)],
                )
            await conn.commit()

    async def _sync_holds(self) -> None:
        """Keep the fast path off the workspaces with tasks held (on each queue) and for
        HOLD_LINGER_S after their last one went out: set the keys of new ones, delete those of
        workspaces with nothing held for that long, and refresh the others' expiry once a
        second."""
        now = time.monotonic()
        refresh = now - self.holds_refreshed >= HOLD_REFRESH_S
        for queue in set(self.holding) | set(self.held.queues()):
            for ws in self.held.workspaces(queue):
                self.last_held[(queue, ws)] = now
            was_held = self.holding.get(queue, set())
            now_held = {
                ws
                for ws in was_held | self.held.workspaces(queue)
                if now - self.last_held.get((queue, ws), now) < HOLD_LINGER_S
                or ws in self.held.workspaces(queue)
            }
            changes = {ws: True for ws in (now_held if refresh else now_held - was_held)}
            changes.update({ws: False for ws in was_held - now_held})
            if changes:
                await self.dispatcher.hold(queue, changes)
            for ws in was_held - now_held:
                self.last_held.pop((queue, ws), None)
            if now_held:
                self.holding[queue] = now_held
            else:
                self.holding.pop(queue, None)
                metrics.TASKS_HELD.labels(queue).set(0)
        if refresh:
            self.holds_refreshed = now

    async def publish(self, tasks: list[TaskMessage]) -> list[str]:
        """XADD the tasks again, claimed or not (republishing lost ones); their entry ids."""
        await self.dispatcher.ensure_queues(tasks)
        async with self.redis.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.xadd(task_stream(self.settings, task.queue), {"task": task.model_dump_json()})
            entry_ids = await pipe.execute()
        return [e.decode() if isinstance(e, bytes) else str(e) for e in entry_ids]

    async def republish_lost(self, older_than_s: float = 30.0) -> int:
        """Publish again the outstanding tasks whose stream entry is gone although no result was
        recorded: after a flush, or when Redis lost part of its data (a restart from an older
        snapshot). A worker deletes an entry only once its result is durable, so an entry missing
        while matching has not seen the result for `older_than_s` means the task was lost."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT task_id, queue, entry_id FROM engine_tasks WHERE entry_id IS NOT NULL"
                " AND published_at < now() - make_interval(secs => %s) LIMIT 1000",
                (older_than_s,),
            )
            rows = await cur.fetchall()
            await conn.commit()
        if not rows:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                entry = row["entry_id"]
                pipe.xrange(task_stream(self.settings, row["queue"]), entry, entry)
            found = await pipe.execute()
        lost = [row["task_id"] for row, hit in zip(rows, found, strict=True) if not hit]
        if not lost:
            return 0
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT payload FROM engine_tasks WHERE task_id = ANY(%b) ORDER BY created_at",
                (lost,),
            )
            rows = await cur.fetchall()
            await conn.commit()
        tasks = [TaskMessage.model_validate(row["payload"] | {"republished": True}) for row in rows]
        for start in range(0, len(tasks), 500):
            page = tasks[start : start + 500]
            await self._record_sent(page, await self.publish(page))
        if tasks:
            log_event(log, "tasks_republished", count=len(tasks))
        return len(tasks)


def _payload(task: TaskMessage) -> Jsonb:
    return Jsonb(task.model_dump(mode="json"))
