"""Group commit: concurrent saves (`CommandContext.save`, `EventStore.append`; from the command
bus's threads) are written together, many aggregates' events in one transaction.

Every append to the event store takes the recorder's table lock (that is what keeps the log
gap-free), so one transaction per command caps appends near 2–3k commits/s however many threads
wait. Here the first caller becomes the leader: it takes every request queued so far (at most
`max_batch`, never two that touch the same aggregate), writes their events in one transaction,
and wakes their callers with their positions; then it hands leadership to the oldest request
still queued. If the shared transaction fails (say, one request lost an optimistic-concurrency
race), each request of the batch is written on its own, so only the loser sees the
`IntegrityError` (and the bus retries it). Atomicity per request is unchanged: a request's
events are all written or none.

An event-loop caller (`save_async`) queues its request the same way and awaits a future: it
costs no thread of its own. When its request is handed the lead, the group commit's own leader
thread leads for it: never a thread of the command pool, whose threads may all be waiting in
`save` for that very lead.

Each request carries its command's `infra.origin.Origin` (actor, request id): the leader writes
every request's events with its own origin, so a shared transaction records each command's
actor (`Put`'s third argument has one origin per event).

A request may carry read checks (`{aggregate id: version}`, see `infra.recorder`): they travel
with its events, a failed check fails the shared transaction like a conflict does, and a batch
never holds a request that writes an aggregate another one of the batch read or wrote.

Imported by `infra.eventstore` only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from infra.origin import SYSTEM, Origin

# Writes a sequence of domain events in one transaction if the read checks hold, each with its
# origin (one per event); returns each one's notification id (position), in order.
Put = Callable[[Sequence[Any], Mapping[UUID, int], Sequence[Origin]], list[int]]
NO_READS: Mapping[UUID, int] = {}


@dataclass(eq=False)
class _Request:
    events: list[Any]
    ids: frozenset[UUID]
    reads: Mapping[UUID, int]
    origin: Origin = SYSTEM
    wake: threading.Event | _LoopWake = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    position: int = 0
    error: BaseException | None = None


class _LoopWake:
    """The wake-up of an event-loop caller's request: once the request is done, resolve the
    caller's future on its loop; when it is handed the lead, lead in an executor's thread."""

    def __init__(
        self, commit: GroupCommit, loop: asyncio.AbstractEventLoop, future: asyncio.Future[int]
    ) -> None:
        self.commit, self.loop, self.future = commit, loop, future
        self.request: _Request | None = None

    def set(self) -> None:
        request = self.request
        assert request is not None
        if request.done:
            self.loop.call_soon_threadsafe(self._resolve, request)
        elif request.lead:
            self.commit._leader.submit(self.commit._lead_for_loop, request)

    def _resolve(self, request: _Request) -> None:
        if self.future.done():  # the caller was cancelled; the request was written anyway
            return
        if request.error is not None:
            self.future.set_exception(request.error)
        else:
            self.future.set_result(request.position)


class GroupCommit:
    def __init__(self, put: Put, max_batch: int = 200) -> None:
        self._put = put
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leading = False
        # Leads for event-loop callers (see the module docstring); one thread, which never
        # waits for another request.
        self._leader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")

    def close(self) -> None:
        self._leader.shutdown(wait=True)

    def save(
        self, events: list[Any], reads: Mapping[UUID, int] = NO_READS, origin: Origin = SYSTEM
    ) -> int:
        """Write `events` (one command's, caused by `origin`) atomically, if the aggregates in
        `reads` are still at those versions; the position of the last one."""
        if not events:
            return 0
        wake = threading.Event()
        ids = frozenset(e.originator_id for e in events)
        request = _Request(events, ids, reads, origin, wake)
        with self._lock:
            self._queue.append(request)
            request.lead = not self._leading
            self._leading = True
        while not request.done:
            if request.lead:
                self._lead(request)
            else:
                wake.wait()
                wake.clear()
        if request.error is not None:
            raise request.error
        return request.position

    async def save_async(
        self, events: list[Any], reads: Mapping[UUID, int], origin: Origin = SYSTEM
    ) -> int:
        """`save` for a caller on an event loop: the same batches, without a thread per
        caller."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        wake = _LoopWake(self, loop, future)
        ids = frozenset(e.originator_id for e in events)
        request = _Request(events, ids, reads, origin, wake)
        wake.request = request
        with self._lock:
            self._queue.append(request)
            request.lead = not self._leading
            self._leading = True
        if request.lead:
            self._leader.submit(self._lead_for_loop, request)
        return await future

    def _lead_for_loop(self, request: _Request) -> None:
        self._lead(request)
        request.wake.set()  # done: resolves the caller's future

    def _lead(self, own: _Request) -> None:
        """Commit batches until our own request is done; then pass the lead on."""
        while not own.done:
            with self._lock:
                batch = self._take()
            self._commit(batch)
            for request in batch:
                if request is not own:
                    request.wake.set()
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._leading = False

    def _take(self) -> list[_Request]:
        """The oldest requests, in order, skipping any that writes an aggregate already taken
        (it would conflict inside the shared transaction), reads one written, or writes one read
        (its check would pass against the state before the batch); called with the lock held."""
        batch: list[_Request] = []
        written: set[UUID] = set()
        read: set[UUID] = set()
        rest: list[_Request] = []
        for request in self._queue:
            if (
                len(batch) < self.max_batch
                and request.ids.isdisjoint(written)
                and request.ids.isdisjoint(read)
                and written.isdisjoint(request.reads)
            ):
                batch.append(request)
                written |= request.ids
                read.update(request.reads)
            else:
                rest.append(request)
        self._queue = rest
        return batch

    def _commit(self, batch: list[_Request]) -> None:
        if len(batch) > 1:
            reads: dict[UUID, int] = {}
            for request in batch:  # the lowest version read of each aggregate is the one to check
                for aggregate_id, version in request.reads.items():
                    reads[aggregate_id] = min(version, reads.get(aggregate_id, version))
            try:
                positions = self._put(
                    [e for request in batch for e in request.events],
                    reads,
                    [request.origin for request in batch for _ in request.events],
                )
            except Exception:  # noqa: BLE001 - fall back to one transaction per request
                pass
            else:
                offset = 0
                for request in batch:
                    offset += len(request.events)
                    request.position, request.done = positions[offset - 1], True
                return
        for request in batch:
            try:
                origins = [request.origin] * len(request.events)
                request.position = self._put(request.events, request.reads, origins)[-1]
            except Exception as exc:  # noqa: BLE001 - the caller re-raises it
                request.error = exc
            request.done = True
