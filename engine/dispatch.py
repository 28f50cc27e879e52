"""Task dispatch: the one way a node's task reaches `tasks:<queue>`, whoever sends it.

Two senders race for each task, and exactly one XADDs it:
- the fast path: the process whose command scheduled the node, right after that command is
  durable (`Dispatcher.after_save`, the `after_save` callable `gateways.bootstrap` gives the
  `CommandBus`), so that a worker can start the node without waiting for the relay and matching;
- matching, which sees every NodeScheduled event in the log and records the task in
  `engine_tasks` (it dispatches the tasks the fast path did not: a crash between the commit and
  the XADD, a command run outside the bus's async path).

Both go through `claim_and_add` (a Lua script, atomic in Redis; matching first MGETs the claim
keys and runs it only for tasks without one): if the task's claim key
`dispatched:<task_id>` exists, it answers the entry id stored there; otherwise it XADDs the task
and stores the new entry id under the claim key for `CLAIM_TTL_S`. Redis is only the transport:
if it loses the claim keys (or matching catches up after more than `CLAIM_TTL_S`), a task may be
sent twice, the at-least-once delivery the worker and the Execution already tolerate (a repeated
result is ignored).

Back-pressure: the fast path sends a task only while the queue's stream holds fewer than
LINKFLOW_DISPATCH_BACKLOG entries no worker has read, and matching holds no task of that
workspace on that queue back (its key `held:<queue>:<workspace>`). Otherwise the task is not
sent: matching records it without an entry id and feeds such tasks to the stream as workers
read it, round-robin across workspaces (`engine.held_tasks`), filling the stream only to
LINKFLOW_DISPATCH_FEED_LEVEL unread entries (at most half the backlog), so that a workspace
with nothing held still finds room on the fast path, behind few of the flood's tasks. So a
queue never floods the workers beyond what they start soon, and one workspace's flood neither
stands in front of another's tasks nor sends them the long way round.

Imported by `engine.matching` and `gateways.bootstrap`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from domain.execution import EXECUTION_CLOSED, Execution
from engine.tasks import TaskMessage, task_for, task_id
from infra import metrics
from infra.logging import get_logger
from infra.outages import OUTAGES
from infra.settings import Settings
from infra.streams import WORKER_GROUP, ensure_group, task_stream

log = get_logger(__name__)

CLAIM_TTL_S = 600
HELD_TTL_S = 5  # a `held:…` key outlives a matching that died by this much
# KEYS: claim, stream, held; ARGV: task, claim TTL, backlog (0: send whatever is queued), group.
# Answers {entry id, 1} sent now, {entry id, 0} sent before, {"", 2} not sent (back-pressure).
_CLAIM_AND_ADD = """
local entry = redis.call('GET', KEYS[1])
if entry then return {entry, 0} end
local backlog = tonumber(ARGV[3])
if backlog > 0 then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {'', 2} end
  local unread = redis.call('XLEN', KEYS[2]) - redis.call('XPENDING', KEYS[2], ARGV[4])[1]
  if unread >= backlog then return {'', 2} end
end
entry = redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
redis.call('SET', KEYS[1], entry, 'EX', ARGV[2])
return {entry, 1}
"""
ATTEMPT_ENDED = (
    Execution.NodeCompleted,
    Execution.NodeFailed,
    Execution.NodeTimedOut,
    Execution.NodeCanceled,
)


def tasks_of(events: Sequence[Any]) -> list[TaskMessage]:
    """The tasks `events` (in log order) leave to dispatch: those of NodeScheduled events whose
    attempt did not end, nor their execution close, later in the same events. Each task's
    fence is the last version of its execution in `events` (the attempt was current then)."""
    scheduled: dict[str, Any] = {}
    closed: set[Any] = set()
    last: dict[Any, int] = {}
    for event in events:
        last[event.originator_id] = event.originator_version
        if isinstance(event, Execution.NodeScheduled) and event.task is not None:
            scheduled[task_id(event.originator_id, event.node_id, event.attempt)] = event
        elif isinstance(event, ATTEMPT_ENDED):
            scheduled.pop(task_id(event.originator_id, event.node_id, event.attempt), None)
        elif isinstance(event, EXECUTION_CLOSED):
            closed.add(event.originator_id)
    return [
        task_for(e, fence=last[e.originator_id])
        for e in scheduled.values()
        if e.originator_id not in closed
    ]


class Dispatcher:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.script = redis.register_script(_CLAIM_AND_ADD)  # holds the script's SHA1
        self.queues_ready: set[str] = set()
        # Tasks of the saves that became durable in this loop turn, and the send they join.
        self._gathering: tuple[list[TaskMessage], asyncio.Future[None]] | None = None

    async def ensure_queues(self, tasks: list[TaskMessage]) -> None:
        """The workers' group exists before its first task, so no task is ever skipped."""
        for queue in {t.queue for t in tasks} - self.queues_ready:
            await self.ensure_queue(queue)

    async def ensure_queue(self, queue: str) -> None:
        if queue not in self.queues_ready:
            await ensure_group(self.redis, task_stream(self.settings, queue), WORKER_GROUP)
            self.queues_ready.add(queue)

    async def dispatch(
        self, tasks: list[TaskMessage], backlog: int | None = None
    ) -> list[str | None]:
        """Send each task unless it was sent already (one round trip); every task's entry id,
        None for a task left unsent by back-pressure (see the module's docstring). `backlog`:
        LINKFLOW_DISPATCH_BACKLOG by default; 0 sends regardless (matching's feed, which
        measured the room first)."""
        await self.ensure_queues(tasks)
        if backlog is None:
            backlog = self.settings.dispatch_backlog
        replies = await self._claim_and_add(tasks, backlog)
        if any(isinstance(r, NoScriptError) for r in replies):
            # Redis lost its script cache (restart, SCRIPT FLUSH): no EVALSHA ran; load, again.
            await self.redis.script_load(_CLAIM_AND_ADD)
            replies = await self._claim_and_add(tasks, backlog)
        if any(isinstance(r, ResponseError) and "NOGROUP" in str(r) for r in replies):
            # Redis lost the workers' group (restart, flush) since this process created it:
            # the script stopped at XPENDING, before sending. Create it again, then send.
            self.queues_ready.clear()
            await self.ensure_queues(tasks)
            replies = await self._claim_and_add(tasks, backlog)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        for task, (_, outcome) in zip(tasks, replies, strict=True):
            if outcome == 1:
                metrics.TASKS_DISPATCHED.labels(task.queue).inc()
        return [_text(e) if outcome != 2 else None for e, outcome in replies]

    async def claimed(self, tasks: list[TaskMessage]) -> list[str | None]:
        """Each task's entry id if someone sent it (one MGET of the claim keys), else None.
        A claim is never removed before its TTL, so a task found claimed was sent."""
        claims = await self.redis.mget([self._claim_key(t) for t in tasks])
        return [_text(claim) if claim is not None else None for claim in claims]

    async def room(self, queue: str) -> int:
        """How many more entries matching's feed may put in the queue's stream: up to the feed
        level unread, at most half the backlog (the rest is the fast path's headroom)."""
        stream = task_stream(self.settings, queue)
        try:
            length, pending = await self._unread(stream)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream and the workers' group (restart, flush): create it again.
            self.queues_ready.discard(queue)
            await self.ensure_queue(queue)
            length, pending = await self._unread(stream)
        level = max(min(self.settings.dispatch_feed_level, self.settings.dispatch_backlog // 2), 1)
        return int(level - (length - pending["pending"]))

    async def _unread(self, stream: str) -> tuple[int, dict[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xpending(stream, WORKER_GROUP)
            length, pending = await pipe.execute()
        return int(length), pending

    async def hold(self, queue: str, workspaces: dict[str, bool]) -> None:
        """Tell the fast path which workspaces matching holds tasks of `queue` back for (it then
        sends none of theirs on that queue, so that their held tasks go first and in turn) and
        which no longer."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for workspace, holding in workspaces.items():
                key = self._held_key(queue, workspace)
                if holding:
                    pipe.set(key, 1, ex=HELD_TTL_S)
                else:
                    pipe.delete(key)
            await pipe.execute()

    def _held_key(self, queue: str, workspace: str) -> str:
        return self.settings.key(f"held:{queue}:{workspace}")

    def _claim_key(self, task: TaskMessage) -> str:
        return self.settings.key(f"dispatched:{task.task_id}")

    async def _claim_and_add(self, tasks: list[TaskMessage], backlog: int) -> list[Any]:
        """EVALSHA per task in one pipeline. (redis-py's `Script` in a pipeline asks SCRIPT
        EXISTS first, a second round trip per dispatch.)"""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task in tasks:
                pipe.evalsha(
                    self.script.sha,
                    3,
                    self._claim_key(task),
                    task_stream(self.settings, task.queue),
                    self._held_key(task.queue, task.workspace_id),
                    task.model_dump_json(),
                    CLAIM_TTL_S,
                    backlog,
                    WORKER_GROUP,
                )
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def after_save(self, events: Sequence[Any]) -> None:
        """The fast path: dispatch the tasks a durable command just scheduled. The saves a group
        commit makes durable together resume in the same loop turn: their tasks are gathered
        into one pipeline (`_send_gathered`), which each of them awaits. Best effort: matching
        dispatches whatever this does not."""
        tasks = tasks_of(events)
        if not tasks:
            return
        if self._gathering is None:
            self._gathering = ([], asyncio.ensure_future(self._send_gathered()))
        gathered, sent = self._gathering
        gathered.extend(tasks)
        await asyncio.shield(sent)  # a caller cancelled does not cancel the others' send

    async def _send_gathered(self) -> None:
        await asyncio.sleep(0)  # the other saves resumed in this turn join first
        assert self._gathering is not None
        tasks, _ = self._gathering
        self._gathering = None
        try:
            await self.dispatch(tasks)
        except Exception as exc:  # noqa: BLE001 - matching dispatches them from the log
            if OUTAGES.report(exc, where="fast dispatch") is None:
                log.warning("fast_dispatch_failed", exc_info=True)


def _text(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
