"""The worker: takes node tasks from `tasks:<queue>` (group `workers`), runs them, and answers
with `CompleteNode` / `FailNode`. Scales out: several workers split a queue's entries.

A task is acknowledged (XACK + XDEL, gathered over a few milliseconds with other tasks') only
after its result command is durable. While a task runs, the worker re-claims its entry every few
seconds so that the reclaim of a *dead* worker's entries (XAUTOCLAIM after
LINKFLOW_TASK_CLAIM_IDLE_MS) never steals a live one. On SIGTERM it stops taking tasks, finishes
(or, past the grace period, leaves pending for another worker) those it holds, and sends the
acknowledgements still gathering. Repeated deliveries are harmless: the Execution ignores a
stale attempt.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import aiohttp
from faststream.redis import RedisBroker
from redis.asyncio import Redis
from redis.typing import StreamIdT

from commands import lookups
from commands.bus import CommandBus
from commands.handlers import NotFound
from commands.models import CompleteNode, FailNode
from engine.nodes.http_request import NodeError, run_http_request
from engine.secrets import redact, resolve
from engine.tasks import TaskMessage
from infra import metrics
from infra.consumer import GroupReader
from infra.crypto import SecretBox
from infra.logging import get_logger, log_event
from infra.outbound import make_session
from infra.settings import Settings
from infra.streams import WORKER_GROUP, control_channel, task_stream

log = get_logger(__name__)

HEARTBEAT_S = 5.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        bus: CommandBus,
        redis: Redis,
        broker: RedisBroker,
        box: SecretBox,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.box = box
        self.redis = redis
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
                max_records=min(100, settings.worker_concurrency),
                claim_idle_ms=settings.task_claim_idle_ms,
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

    def _handler_for(self, queue: str) -> Any:
        async def handle(ids: list[bytes], entries: list[dict[bytes, bytes]]) -> None:
            reader = next(r for r in self.readers if r.stream == task_stream(self.settings, queue))
            for entry_id, fields in zip(ids, entries, strict=True):
                await self.slots.acquire()
                task = asyncio.create_task(self._run(reader, entry_id, fields))
                self.running[entry_id] = (reader, task)

        return handle

    async def prepare(self) -> None:
        self.session = make_session(self.settings.allow_private_network)
        for reader in self.readers:
            await reader.prepare()

    async def _run(self, reader: GroupReader, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            try:
                task = TaskMessage.model_validate_json(fields[b"task"])
            except (KeyError, ValueError):
                metrics.MALFORMED_ENTRIES.labels("worker").inc()
                log_event(log, "malformed_task_dropped", entry=entry_id.decode())
                reader.ack_soon(entry_id)
                return
            if task.republished and not await self.bus.run(
                lookups.attempt_is_current, task.execution_id, task.node_id, task.attempt
            ):
                # Published again after Redis lost data, but its result is already recorded.
                reader.ack_soon(entry_id)
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
            try:
                await self.bus.execute(command)
            except NotFound:
                log_event(log, "task_for_unknown_execution_dropped", task_id=task.task_id)
            reader.ack_soon(entry_id)
        except Exception:
            # Left pending: another worker (or this one) reclaims it after the idle time.
            log.exception("task_failed", extra={"fields": {"entry": entry_id.decode()}})
        finally:
            self.running.pop(entry_id, None)
            self.slots.release()

    async def _credential(self, workspace_id: str, name: str) -> lookups.SealedCredential | None:
        return await self.bus.run(lookups.sealed_credential, workspace_id, name)

    async def execute(self, task: TaskMessage) -> CompleteNode | FailNode:
        """Run one node attempt and say what happened, as the command to send. Credentials the
        config reads are filled in for this attempt only, and redacted from what it answers."""
        node_type = task.type
        started = time.perf_counter()
        ids: dict[str, Any] = {
            "execution_id": task.execution_id,
            "node_id": task.node_id,
            "attempt": task.attempt,
        }
        secrets: list[str] = []
        try:
            if node_type != "http_request":
                raise NodeError("unsupported_node", f"no executor for {node_type}", retryable=False)
            assert self.session is not None
            lookup = functools.partial(self._credential, task.workspace_id)
            config, secrets = await resolve(task.config, task.secrets, lookup, self.box)
            output = await run_http_request(
                config,
                task.timeout_s,
                self.session,
                self.settings.allow_private_network,
            )
        except NodeError as exc:
            metrics.NODE_RUNS.labels(node_type, "failed").inc()
            return FailNode(**ids, error=redact(exc.error, secrets), retryable=exc.retryable)
        except Exception as exc:
            if not secrets:
                raise
            # Its message may quote the config: let only the exception's type be logged.
            raise RuntimeError(f"{type(exc).__name__} in a node using credentials") from None
        finally:
            metrics.NODE_SECONDS.labels(node_type).observe(time.perf_counter() - started)
        metrics.NODE_RUNS.labels(node_type, "completed").inc()
        return CompleteNode(**ids, output=redact(output, secrets))

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Keep the entries of running tasks from looking idle (and so from being reclaimed)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_S)
            except TimeoutError:
                pass
            by_reader: dict[GroupReader, list[StreamIdT]] = {}
            for entry_id, (reader, _) in list(self.running.items()):
                by_reader.setdefault(reader, []).append(entry_id)
            for reader, entry_ids in by_reader.items():
                try:
                    await self.redis.xclaim(
                        reader.stream,
                        reader.group,
                        reader.consumer,
                        min_idle_time=0,
                        message_ids=entry_ids,
                        justid=True,
                    )
                except Exception:
                    log.exception("heartbeat_failed")

    async def revive(self) -> None:
        for reader in self.readers:
            await reader.revive()

    async def drain(self, grace_s: float = 10.0) -> None:
        """On shutdown: let running tasks finish within the grace period."""
        tasks = [task for _, task in self.running.values()]
        if tasks:
            log_event(log, "draining", tasks=len(tasks))
            await asyncio.wait(tasks, timeout=grace_s)
        for reader in self.readers:
            await reader.flush_acks()
        if self.session is not None:
            await self.session.close()
