"""The worker: takes node tasks from `tasks:<queue>` (group `workers`), runs them, and answers
with `CompleteNode` / `FailNode` / `TimeOutNode`. Scales out: several workers split a queue's
entries.

Before it runs anything, a worker makes sure the attempt still awaits its result
(`engine.fence`; for nodes with a schedule-to-start timeout, by recording the start with
`StartNode`), so an attempt that has ended — its execution canceled or closed, a repeated or
reclaimed entry whose result is recorded — never makes an outbound call. The node's `timeout_s`
bounds the attempt from that moment (start-to-close): time the task waited in the queue does
not count.

A task is acknowledged (XACK + XDEL, gathered over a few milliseconds with other tasks') only
after its result command is durable; while PostgreSQL is away the result is kept and sent again
(the entry stays claimed), never the node run again. While a task runs, the worker re-claims
its entry every few seconds so that the reclaim of a *dead* worker's entries (XAUTOCLAIM after
LINKFLOW_TASK_CLAIM_IDLE_MS) never steals a live one. An entry delivered more than
LINKFLOW_TASK_MAX_DELIVERIES times (workers died handling it) fails its node with
`worker_error` instead of running again; an unexpected exception while running a node fails the
attempt with `worker_error` (the node's retry policy applies). On SIGTERM it stops taking tasks,
finishes (or, past the grace period, leaves pending for another worker) those it holds, and
sends the acknowledgements still gathering. Repeated deliveries are harmless: the Execution
ignores a stale attempt.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from faststream.redis import RedisBroker
from redis.asyncio import Redis
from redis.typing import StreamIdT

from commands import lookups
from commands.bus import CommandBus, CommandConflict
from commands.handlers import Decision, NotFound
from commands.models import CompleteNode, FailNode, StartNode, TimeOutNode
from domain.json_limits import json_size
from engine.fence import AttemptFence
from engine.nodes.http_request import DEFAULT_TIMEOUT_S, NodeError, run_http_request
from engine.secrets import redact, resolve
from engine.tasks import TaskMessage
from infra import metrics
from infra.consumer import GroupReader
from infra.crypto import SecretBox
from infra.db import DictPool
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES, REDIS
from infra.outbound import make_session
from infra.settings import Settings
from infra.streams import WORKER_GROUP, control_channel, task_stream

log = get_logger(__name__)

HEARTBEAT_S = 5.0
# Entries read at a time: at most this many wait in a worker for a free slot (the rest stay in
# the stream, where matching can still put another workspace's tasks before them).
READ_AHEAD = 16
# Sending a result again while PostgreSQL is away: the back-off between tries.
REPORT_BACKOFF_S = (0.1, 5.0)
MESSAGE_LIMIT = 1000

Result = CompleteNode | FailNode | TimeOutNode
T = TypeVar("T")


class Worker:
    def __init__(
        self,
        settings: Settings,
        bus: CommandBus,
        redis: Redis,
        broker: RedisBroker,
        box: SecretBox,
        pool: DictPool,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.box = box
        self.redis = redis
        self.fence = AttemptFence(pool, self._still_current)
        self.stopping = False
        # Claims are renewed well within the idle time after which others may reclaim them.
        self.heartbeat_s = min(HEARTBEAT_S, settings.task_claim_idle_ms / 3000)
        self.slots = asyncio.Semaphore(settings.worker_concurrency)
        self.running: dict[bytes, tuple[GroupReader, asyncio.Task[None]]] = {}
        self.by_task_id: dict[str, asyncio.Task[Any]] = {}
        self.session: aiohttp.ClientSession | None = None
        self.readers = [
            GroupReader(
                broker,
                redis,
                task_stream(settings, queue),
                WORKER_GROUP,
                self._handler_for(queue),
                max_records=min(READ_AHEAD, settings.worker_concurrency),
                claim_idle_ms=settings.task_claim_idle_ms,
                on_reclaimed=self._handler_for(queue, reclaimed=True),
            )
            for queue in settings.queues
        ]
        broker.subscriber(channel=control_channel(settings))(self.on_control)

    async def on_control(self, body: dict[str, Any]) -> None:
        """Matching says these attempts were canceled: stop running them."""
        for tid in body.get("cancel", []):
            running = self.by_task_id.get(tid)
            if running is not None:
                log_event(log, "attempt_canceled", task_id=tid)
                running.cancel()

    def _handler_for(self, queue: str, reclaimed: bool = False) -> Any:
        stream = task_stream(self.settings, queue)

        async def handle(ids: list[bytes], entries: list[dict[bytes, bytes]]) -> None:
            reader = next(r for r in self.readers if r.stream == stream)
            if reclaimed:  # this worker's own entries, still running, are not run twice
                kept = [(i, e) for i, e in zip(ids, entries, strict=True) if i not in self.running]
                ids, entries = [i for i, _ in kept], [e for _, e in kept]
            deliveries = await reader.deliveries(ids) if reclaimed and ids else {}
            for entry_id, fields in zip(ids, entries, strict=True):
                await self.slots.acquire()
                delivered = deliveries.get(entry_id, 1)
                task = asyncio.create_task(self._run(reader, entry_id, fields, delivered))
                self.running[entry_id] = (reader, task)

        return handle

    async def prepare(self) -> None:
        self.session = make_session(self.settings.allow_private_network)
        for reader in self.readers:
            await reader.prepare()

    async def _run(
        self, reader: GroupReader, entry_id: bytes, fields: dict[bytes, bytes], delivered: int
    ) -> None:
        try:
            try:
                task = TaskMessage.model_validate_json(fields[b"task"])
            except (KeyError, ValueError):
                metrics.MALFORMED_ENTRIES.labels("worker").inc()
                log_event(log, "malformed_task_dropped", entry=entry_id.decode())
                reader.ack_soon(entry_id)
                return
            if delivered > self.settings.task_max_deliveries:
                # Workers died handling it, again and again: end the node, do not run it again.
                message = f"the task was delivered {delivered} times without a result"
                poisoned = _failed(task, "worker_error", message, retryable=False)
                log_event(log, "task_poisoned", task_id=task.task_id, deliveries=delivered)
                if await self._report(poisoned):
                    reader.ack_soon(entry_id)
                return
            if not await self._despite_outages(self._may_run, task, delivered > 1):
                metrics.TASKS_SKIPPED.inc()
                reader.ack_soon(entry_id)  # its attempt has ended: nothing to run or report
                return
            attempt = asyncio.ensure_future(self.execute(task))
            self.by_task_id[task.task_id] = attempt
            try:
                command = await attempt
            except asyncio.CancelledError:
                if not attempt.cancelled():
                    raise  # this worker is being torn down: leave the entry pending
                await reader.ack([entry_id], delete=True)  # canceled attempt: nothing to report
                return
            finally:
                self.by_task_id.pop(task.task_id, None)
            if await self._report(command):
                reader.ack_soon(entry_id)
        except Stopping:
            pass  # left pending: another worker takes it over
        except Exception as exc:
            # Left pending: another worker (or this one) reclaims it after the idle time.
            if OUTAGES.report(exc, where="worker task") is None:
                log.exception("task_failed", extra={"fields": {"entry": entry_id.decode()}})
        finally:
            self.running.pop(entry_id, None)
            self.slots.release()

    async def _may_run(self, task: TaskMessage, reclaimed: bool) -> bool:
        """Whether the attempt still awaits its result. A node with a schedule-to-start timeout
        records its start (the Execution refuses it once the timeout fired); a reclaimed one
        that a dead worker started already runs again (at least once)."""
        if task.schedule_to_start_s:
            if await self._started(task):
                return True
            return reclaimed and await self._still_current(task)
        return await self.fence.is_current(task)

    async def _still_current(self, task: TaskMessage) -> bool:
        return await self.bus.run(
            lookups.attempt_is_current, task.execution_id, task.node_id, task.attempt
        )

    async def _started(self, task: TaskMessage) -> bool:
        command = StartNode(
            execution_id=task.execution_id, node_id=task.node_id, attempt=task.attempt
        )
        return await self._send(
            command, lambda result: isinstance(result, Decision) and result.accepted
        )

    async def _report(self, command: Result) -> bool:
        """Record a node's result; True once it is durable (or its execution is unknown). A
        result that cannot be recorded for another reason than an outage is replaced by a
        `worker_error` failure (if even that fails, the exception leaves the entry pending)."""
        try:
            return await self._send(command, lambda _: True)
        except Stopping:
            raise
        except NotFound:
            log_event(log, "task_for_unknown_execution_dropped", execution=command.execution_id)
            return True
        except Exception as exc:
            if isinstance(command, FailNode) and command.error.get("type") == "worker_error":
                raise
            log.exception("result_not_recorded", extra={"fields": {"node": command.node_id}})
            message = f"its result could not be recorded ({type(exc).__name__})"
            failed = FailNode(
                execution_id=command.execution_id,
                node_id=command.node_id,
                attempt=command.attempt,
                error={"type": "worker_error", "message": message},
                retryable=True,
            )
            return await self._send(failed, lambda _: True)

    async def _send(self, command: Any, outcome: Any) -> bool:
        """Execute a command (trying again, never the node, while PostgreSQL or Redis is away)
        and say what `outcome` makes of its result."""

        async def send() -> bool:
            return bool(outcome(await self.bus.execute(command)))

        return await self._despite_outages(send)

    async def _despite_outages(self, step: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await step(*args)`, again with back-off while PostgreSQL or Redis is away (or the
        bus keeps conflicting), holding the entry meanwhile: an outage is neither a reason to
        run a node again nor a delivery that counts against LINKFLOW_TASK_MAX_DELIVERIES.
        `Stopping` if the worker stops first (the entry stays pending for another)."""
        delay, longest = REPORT_BACKOFF_S
        while True:
            try:
                return await step(*args)
            except Exception as exc:
                if OUTAGES.report(exc, where="worker task") is None:
                    if not isinstance(exc, CommandConflict):
                        raise
                if self.stopping:
                    raise Stopping from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def _credential(self, workspace_id: str, name: str) -> lookups.SealedCredential | None:
        return await self.bus.run(lookups.sealed_credential, workspace_id, name)

    async def execute(self, task: TaskMessage) -> Result:
        """Run one node attempt and say what happened, as the command to send. Credentials the
        config reads are filled in for this attempt only, and redacted from what it answers.
        The attempt may run for `timeout_s` (start-to-close) from here."""
        node_type = task.type
        started = time.perf_counter()
        ids: dict[str, Any] = {
            "execution_id": task.execution_id,
            "node_id": task.node_id,
            "attempt": task.attempt,
        }
        secrets: list[str] = []
        limit = task.timeout_s or DEFAULT_TIMEOUT_S
        try:
            async with asyncio.timeout(limit):
                if node_type != "http_request":
                    message = f"no executor for {node_type}"
                    raise NodeError("unsupported_node", message, retryable=False)
                assert self.session is not None
                lookup = functools.partial(self._credential, task.workspace_id)
                config, secrets = await resolve(task.config, task.secrets, lookup, self.box)
                output = await run_http_request(
                    config,
                    limit,
                    self.session,
                    self.settings.allow_private_network,
                    max_depth=self.settings.max_json_depth,
                )
        except TimeoutError:
            metrics.NODE_RUNS.labels(node_type, "timed_out").inc()
            return TimeOutNode(**ids)
        except NodeError as exc:
            if exc.error["type"] == "timeout":
                metrics.NODE_RUNS.labels(node_type, "timed_out").inc()
                return TimeOutNode(**ids)
            metrics.NODE_RUNS.labels(node_type, "failed").inc()
            return FailNode(**ids, error=redact(exc.error, secrets), retryable=exc.retryable)
        except Exception as exc:
            # A fault of the worker's own (a bug, an input nothing expected): the attempt
            # fails as `worker_error` and the node's retry policy decides, instead of the
            # entry being delivered again and again. A node using credentials logs only the
            # exception's type: its message may quote the config.
            metrics.NODE_RUNS.labels(node_type, "worker_error").inc()
            if secrets:
                message = f"{type(exc).__name__} in a node using credentials"
                log_event(log, "node_raised", node=task.node_id, error=type(exc).__name__)
            else:
                message = f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
                log.exception("node_raised", extra={"fields": {"node": task.node_id}})
            return FailNode(
                **ids, error={"type": "worker_error", "message": message}, retryable=True
            )
        finally:
            metrics.NODE_SECONDS.labels(node_type).observe(time.perf_counter() - started)
        output = redact(output, secrets)
        most = self.settings.max_output_bytes
        if json_size(output, most) > most:
            metrics.NODE_RUNS.labels(node_type, "failed").inc()
            message = f"the node's output exceeds {most} bytes"
            error = {"type": "output_too_large", "message": message}
            return FailNode(**ids, error=error, retryable=False)
        metrics.NODE_RUNS.labels(node_type, "completed").inc()
        return CompleteNode(**ids, output=output)

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Keep the entries of running tasks from looking idle (and so from being reclaimed)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.heartbeat_s)
            except TimeoutError:
                pass
            by_reader: dict[GroupReader, list[StreamIdT]] = {}
            for entry_id, (reader, _) in list(self.running.items()):
                by_reader.setdefault(reader, []).append(entry_id)
            for reader, entry_ids in by_reader.items():
                with OUTAGES.guard("heartbeat_failed", REDIS, logger=log):
                    await self.redis.xclaim(
                        reader.stream,
                        reader.group,
                        reader.consumer,
                        min_idle_time=0,
                        message_ids=entry_ids,
                        justid=True,
                    )

    async def revive(self) -> None:
        for reader in self.readers:
            await reader.revive()

    async def drain(self, grace_s: float = 10.0) -> None:
        """On shutdown: let running tasks finish within the grace period."""
        self.stopping = True
        tasks = [task for _, task in self.running.values()]
        if tasks:
            log_event(log, "draining", tasks=len(tasks))
            await asyncio.wait(tasks, timeout=grace_s)
        for reader in self.readers:
            await reader.flush_acks()
        if self.session is not None:
            await self.session.close()


def _failed(task: TaskMessage, kind: str, message: str, retryable: bool) -> FailNode:
    return FailNode(
        execution_id=task.execution_id,
        node_id=task.node_id,
        attempt=task.attempt,
        error={"type": kind, "message": message},
        retryable=retryable,
    )


class Stopping(Exception):
    """The worker stops while a dependency is away: what it was doing is left pending."""
