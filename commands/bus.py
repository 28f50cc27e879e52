"""The command bus: runs handlers in a thread pool (the event store is synchronous) and retries
optimistic-concurrency conflicts and stale reads of held state on fresh reads, so a concurrent
writer never surfaces as a 500. Each run of a command gets its own `CommandContext`
(`commands.context`), which the handler reads and saves through, and from which the bus reads
the outcome. Starts and node results whose state is held run on the event loop (`_on_loop`).

A command's origin (`infra.origin`: actor, request id) is taken where it enters, in `execute`,
on the event loop: the caller's `origin`, else the request's (`current_origin`, set by the
gateway); from there it is an argument down to the saves.

Imported by the gateways and the engine; wiring happens in `gateways.bootstrap`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from commands import lookups
from commands.context import CommandContext
from commands.handlers import Result
from commands.models import (
    Command,
    CompleteNode,
    FailNode,
    FireTimer,
    StartExecution,
    StartNode,
    TimeOutNode,
)
from commands.principal import Principal, authorise
from commands.registry import HANDLERS
from commands.signals import SendSignal
from domain.limits import DEFAULT_LIMITS, Limits
from domain.roles import Action, permits
from infra import metrics
from infra.eventstore import EventStore
from infra.group_commit import NO_READS
from infra.origin import SYSTEM, Origin, current_origin
from infra.outages import is_unavailable
from infra.recorder import StaleRead

MAX_CONFLICT_RETRIES = 8
T = TypeVar("T")


# Called (on the event loop) with the events a command executed through `execute` saved, once
# they are durable; it must not raise (see engine.dispatch: the fast path to workers).
AfterSave = Callable[[list[Any]], Awaitable[None]]


class CommandBus:
    def __init__(
        self,
        store: EventStore,
        threads: int = 8,
        after_save: AfterSave | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="command")
        self.after_save = after_save
        self.limits = limits

    def handle(
        self, cmd: Command, reads: Mapping[UUID, int] = NO_READS, origin: Origin = SYSTEM
    ) -> Result:
        """Run one command synchronously, retrying on conflicts with a fresh load; its saves
        are conditional on `reads` (versions the caller read, see `CommandContext.check`) and
        record `origin` beside its events."""
        name = type(cmd).__name__
        handler = HANDLERS[type(cmd)]
        started = time.perf_counter()
        fresh = False  # see CommandContext: the first run decides on what the process holds
        for attempt in range(MAX_CONFLICT_RETRIES):
            ctx = CommandContext(self.store, self.limits, reads, fresh=fresh, origin=origin)
            try:
                result = handler(ctx, cmd)
                result.saved = ctx.saved
            except StaleRead as stale:
                # What was read changed since: read it again. A stale read from the caller's
                # `reads` cannot be made fresh here, so it ends the command (the caller retries).
                metrics.COMMAND_CONFLICTS.labels(name).inc()
                if not reads.keys().isdisjoint(stale.ids):
                    self.store.forget(stale.ids)
                    raise
                fresh = True
                continue
            except IntegrityError:
                metrics.COMMAND_CONFLICTS.labels(name).inc()
                if not fresh and ctx.held:
                    fresh = True  # what it loaded had moved on: no need to wait
                    continue
                time.sleep(0.002 * (attempt + 1))
                continue
            except Exception as exc:
                if is_unavailable(exc):
                    # PostgreSQL is away: deciding again on fresh reads would wait for it again.
                    metrics.COMMANDS.labels(name, "unavailable").inc()
                    raise
                if not fresh and ctx.held:
                    # A refusal (not found, inactive trigger, stale attempt…) decided on what
                    # this process held is decided again on fresh reads: no save checked it.
                    fresh = True
                    continue
                metrics.COMMANDS.labels(name, "error").inc()
                raise
            if not ctx.saved and not fresh and ctx.held:
                fresh = True  # nothing saved: nothing checked what it was decided on
                continue
            metrics.COMMANDS.labels(name, "ok").inc()
            metrics.COMMAND_SECONDS.labels(name).observe(time.perf_counter() - started)
            return result
        metrics.COMMANDS.labels(name, "conflict").inc()
        raise CommandConflict(name)

    async def execute(
        self, cmd: Command, reads: Mapping[UUID, int] = NO_READS, origin: Origin | None = None
    ) -> Result:
        """Run the command (on the loop when it can, else in a thread). Its events record
        `origin`, by default the current request's (`infra.origin.current_origin`)."""
        origin = origin or current_origin()
        result = await self._on_loop(cmd, reads, origin) if _runs_on_loop(cmd) else None
        if result is None:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, self.handle, cmd, reads, origin)
        if self.after_save is not None and result.saved:
            await self.after_save(result.saved)
        return result

    async def _on_loop(
        self, cmd: Command, reads: Mapping[UUID, int], origin: Origin
    ) -> Result | None:
        """Run the command on the event loop when all it reads is held: no thread hop, and its
        save joins the group commit as an awaited future (`GroupCommit.save_async`). None when
        it cannot decide that way (something not held, a refusal, a conflict on saving: nothing
        was written); `execute` then runs it in a thread, which decides it again."""
        name = type(cmd).__name__
        started = time.perf_counter()
        ctx = CommandContext(self.store, self.limits, reads, on_loop=True, origin=origin)
        try:
            result = HANDLERS[type(cmd)](ctx, cmd)
        except Exception:
            return None
        if len(ctx.deferred) != 1:  # nothing saved on held state: decide it on fresh reads
            return None
        [save] = ctx.deferred
        try:
            result.position = await self.store.group_commit.save_async(
                save.events, save.reads, save.origin
            )
        except (StaleRead, IntegrityError):
            metrics.COMMAND_CONFLICTS.labels(name).inc()
            return None
        self.store.keep_saved(save.aggregates)
        result.saved = save.events
        metrics.COMMANDS.labels(name, "ok").inc()
        metrics.COMMAND_SECONDS.labels(name).observe(time.perf_counter() - started)
        return result

    async def execute_as(
        self,
        caller: Principal,
        workspace_id: UUID,
        action: Action,
        build: Callable[[], Awaitable[Command]],
    ) -> Result:
        """Run the command `await build()` as `caller` in the workspace, if their role there
        permits `action` (`commands.principal.authorise`: NotFound, Forbidden; decided before
        `build` runs). A user's role comes from the workspace as this process holds it, asking
        PostgreSQL nothing, and the command's save checks that the workspace has not changed
        since; if it has, the role is read again and the command run again (CommandConflict
        after MAX_CONFLICT_RETRIES)."""
        command: Command | None = None
        for _ in range(MAX_CONFLICT_RETRIES):
            role, reads = await self._role(caller, workspace_id, action)
            authorise(role, action)
            command = command or await build()
            try:
                return await self.execute(command, reads)
            except StaleRead:
                continue  # `handle` forgot the workspace: the next turn reads it again
        raise CommandConflict(type(command).__name__)

    async def _role(
        self, caller: Principal, workspace_id: UUID, action: Action
    ) -> tuple[str | None, dict[UUID, int]]:
        """The caller's role in the workspace, and the read a command acting on it must check."""
        if not caller.is_user:
            return caller.key_role(workspace_id), {}
        held = lookups.held_role(self.store, workspace_id, caller.id, wait=False)
        if held is None or held.role is None or not permits(held.role, action):
            # Not held yet, or a refusal: decided on a fresh read (no save will check it).
            self.store.forget([workspace_id])
            held = await self.run(lookups.held_role, workspace_id, caller.id)
        assert held is not None  # waited for
        return held.role, {workspace_id: held.version}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a synchronous read of the write model (see commands.lookups) off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, self.store, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


# Commands `execute` tries on the event loop: their handlers save at most once, and the result's
# position is that save's (a keyed start may answer from an earlier save: not on the loop).
_ON_LOOP = (CompleteNode, FailNode, FireTimer, StartNode, TimeOutNode)


def _runs_on_loop(cmd: Command) -> bool:
    if isinstance(cmd, StartExecution | SendSignal):  # a keyed repeat answers an earlier save
        return cmd.idempotency_key is None
    return isinstance(cmd, _ON_LOOP)


class CommandConflict(RuntimeError):
    """Conflicts persisted through every retry (answered as 503, retry later)."""
