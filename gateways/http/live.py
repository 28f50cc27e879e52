"""Live updates for the SSE routes (`gateways.http.routes_live`): the gateway process's `Hub` and
one client's `Stream`.

One subscription per process, whatever the number of clients: the hub's reader follows the
relay's `events` stream with a plain XREAD (no consumer group, nothing acknowledged) and hands
each event to the clients that asked for it. It starts with the first client and stops when the
last one leaves, so a gateway nobody streams from does no work for it. An entry's header says
whose event it is (originator id, topic) before anything is decoded: an event is decoded, once,
only when a client follows its execution; the others are skipped unread.

Redis is a transport that may lose entries (a flush, trimming), so the reader keeps `last`, the
position up to which every event has been handed out: an entry that does not start at `last + 1`
makes it read the gap from the event store first, and a second with no entry while the log is
ahead (the relay stopped, Redis away) makes it read the log itself. Clients never query the log
for live events: the hub does, once for the process.

- Execution streams: a client registers (its queue then receives every event of the execution
  past `last`), then reads the execution's events up to now from the event store, then takes its
  queue, skipping positions it already sent: no gap, no duplicate, in log order.
- The live feed: status changes are `ExecutionStarted`, `ExecutionQueued`, `ExecutionAdmitted`
  and the closing events; the projector writes the position of the one that last set a row's
  status as `rm_executions.status_position`.
  When such events pass and a workspace has live subscribers, the hub's one projector waiter
  (not one per client) polls the projector's position until it has applied them, then reads the
  rows of the subscribed workspaces whose status changed since its previous read, in one query
  ordered by `status_position`, and offers each row to the subscribers whose filter it matches
  (`projections.query_match`, evaluated once per distinct filter). A row is read as it is now;
  one found closed whose `ExecutionStarted` the reader saw since the previous read is also
  offered as it was when it started (`running`, at the start's position), first: a fast
  execution shows both changes even when the projector applied both in one batch.
- Slow clients: each has a bounded queue (`LINKFLOW_SSE_QUEUE` messages). The hub never waits
  for a client; a client whose queue is full is cut off (its connection aborted, one log line
  `sse_client_cut`, `linkflow_sse_cut_total{reason="slow"}`), and so is a client whose socket
  takes a write longer than `LINKFLOW_SSE_WRITE_TIMEOUT_S` (`stalled`). Memory per client is
  bounded by its queue and the transport's write buffer. One sweeper task per process (not a
  timer per write) finds the stalled writes and queues the heartbeats of quiet streams.
- `Hub.close` (the application's shutdown) ends every stream cleanly.

Imported by `gateways.http.routes_live` and `gateways.http.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web
from eventsourcing.utils import get_topic
from redis.asyncio import Redis

from domain.execution import CLOSED_STATUS, Execution
from domain.statuses import ExecutionStatus
from gateways.http.errors import ApiError
from infra import metrics
from infra.db import DictConnection, DictPool
from infra.eventlog import LoggedEvent, head_position, read_log, unpack
from infra.eventstore import EventStore
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES, REDIS, is_outage
from infra.settings import Settings
from infra.streams import events_stream
from projections.queries import execution_item, history_entry, projector_position
from projections.query_language import Expr
from projections.query_match import matches

log = get_logger(__name__)
T = TypeVar("T")

CLOSING_TOPICS = frozenset(get_topic(c) for c in CLOSED_STATUS)
STARTED_TOPIC = get_topic(Execution.ExecutionStarted)
# Queued and admitted (settings.concurrency) change the status too.
GATE_TOPICS = frozenset(
    get_topic(c) for c in (Execution.ExecutionQueued, Execution.ExecutionAdmitted)
)
STATUS_TOPICS = CLOSING_TOPICS | GATE_TOPICS | {STARTED_TOPIC}
QUEUED_TOPIC = get_topic(Execution.ExecutionQueued)
CLOSING_TYPES = frozenset(c.__name__ for c in CLOSED_STATUS)
HEARTBEAT = b": keep-alive\n\n"

# Stream entries per XREAD, and how long it blocks waiting for one (then the log is checked).
READ_ENTRIES = 100
BLOCK_MS = 1000
# Events or rows per page when reading PostgreSQL.
PAGE = 500
# After a failure of Redis or PostgreSQL, the reader and the waiter try again after this.
RETRY_S = 0.5
# The projector waiter polls this often while the projector moves, then more slowly.
POLL_S = 0.01
SLOW_POLL_S = 0.25
SLOW_AFTER_S = 1.0
# Starts the live feed remembers while the projector has not applied them (past it, a start
# whose row the feed first reads closed is sent closed only).
MAX_STARTS = 100_000
# The columns an execution's close sets: without them, its row is the row as started.
_CLOSE_COLUMNS = ("output", "error", "closed_at", "duration_ms", "error_code", "failed_node")


@dataclass(frozen=True, slots=True)
class Message:
    """One SSE event, framed: its position (the `id:`) and whether it closes the execution."""

    position: int
    frame: bytes
    closing: bool = False


# What a client's queue receives when the hub shuts down (the stream ends), and when the
# stream has been quiet for a heartbeat (a comment line).
END = Message(0, b"")
BEAT = Message(0, HEARTBEAT)
# Messages a stream writes in one go when its queue holds several.
WRITE_BATCH = 64


class Disconnected(Exception):
    """The client went away, or was cut off: the stream ends without a last word."""


@dataclass(eq=False)
class Client:
    """One open stream: what it follows, its bounded queue, when it was last written to (and
    since when a write has been waiting, if one is), and why it was cut off (if so)."""

    kind: str  # "execution" | "live"
    workspace_id: UUID
    queue: asyncio.Queue[Message]
    transport: asyncio.Transport | None
    key: Any = None  # the execution id, or the filter
    written_at: float = 0.0  # loop time
    writing_since: float | None = None
    beat_queued: bool = False
    cut: str | None = None


@dataclass(eq=False)
class _Filter:
    """Live subscribers of one workspace with the same filter: matched once per row."""

    expr: Expr | None
    clients: set[Client] = field(default_factory=set)


def _frame(position: int, event: str, data: Any) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {position}\nevent: {event}\ndata: {body}\n\n".encode()


def event_message(store: EventStore, e: LoggedEvent) -> tuple[Any, Message]:
    """The workspace of an execution's event and its SSE message: the history entry of
    `GET …/history` (`projections.queries`) plus its `position`."""
    row = {"originator_version": e.originator_version, "topic": e.topic, "state": e.state}
    entry = history_entry(store, e.originator_id, row)
    workspace = entry.pop("workspace_id")
    frame = _frame(e.position, entry["type"], {"position": e.position, **entry})
    return workspace, Message(e.position, frame, entry["type"] in CLOSING_TYPES)


def as_started(row: dict[str, Any], position: int) -> dict[str, Any]:
    """A closed execution's row as it was when it started, at `position` (everything else in
    the row is set at the start and never changes)."""
    started = {column: None for column in _CLOSE_COLUMNS}
    return row | started | {"status": ExecutionStatus.RUNNING, "status_position": position}


def change_message(row: dict[str, Any]) -> Message:
    """An execution's row as the live feed's `execution` event (the list item)."""
    position = row["status_position"]
    return Message(position, _frame(position, "execution", execution_item(row)))


class Hub:
    """The process's live updates: clients register here (see the module docstring)."""

    def __init__(self, settings: Settings, redis: Redis, pool: DictPool, store: EventStore) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.store = store
        self.stream = events_stream(settings)
        self.block_ms = BLOCK_MS
        self.last = 0  # every event up to this position has been handed out
        self._entry: bytes | None = None  # the last stream entry read (None: not known yet)
        self._clients: set[Client] = set()
        self._executions: dict[UUID, set[Client]] = {}
        self._live: dict[UUID, dict[Expr | None, _Filter]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._feed = 0  # the live feed has offered every status change up to this position
        self._feeding = 0  # how far the read in progress goes (its rows are being offered)
        self._status_seen = 0  # the last status change the reader saw
        self._starts: dict[UUID, int] = {}  # executions started past the feed: their position
        self._waits: list[tuple[int, asyncio.Future[None]]] = []
        self._waiter: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def streams(self) -> int:
        return len(self._clients)

    @property
    def following(self) -> bool:
        """Whether the hub follows the log now (only while it has clients)."""
        return self._reader is not None and not self._reader.done()

    # ------------------------------------------------------------ clients

    @asynccontextmanager
    async def follow_execution(
        self, request: web.Request, workspace_id: UUID, execution_id: UUID
    ) -> AsyncIterator[Client]:
        """A client receiving the execution's events past `last` (as of when this yields)."""
        client = self._client(request, "execution", workspace_id, execution_id)
        self._executions.setdefault(execution_id, set()).add(client)
        try:
            await self._started()
            yield client
        finally:
            self.leave(client)

    @asynccontextmanager
    async def follow_live(
        self, request: web.Request, workspace_id: UUID, expr: Expr | None
    ) -> AsyncIterator[tuple[Client, int]]:
        """A client receiving the workspace's status changes that match `expr`, and the position
        its feed starts after: every change past it is offered to the client."""
        client = self._client(request, "live", workspace_id, expr)
        try:
            await self._started()
            if not self._live:
                self._feed = max(self._feed, self.last)
            group = self._live.setdefault(workspace_id, {}).setdefault(expr, _Filter(expr))
            group.clients.add(client)
            yield client, max(self.last, self._feed, self._feeding)
        finally:
            self.leave(client)

    def _client(self, request: web.Request, kind: str, workspace_id: UUID, key: Any) -> Client:
        if self._closed:
            raise ApiError(
                503, "unavailable", "the server is shutting down", headers={"Retry-After": "1"}
            )
        if len(self._clients) >= self.settings.sse_max_streams:
            metrics.SSE_REFUSED.inc()
            raise ApiError(
                503,
                "too_many_streams",
                f"this server has {self.settings.sse_max_streams} streams open; retry shortly",
                headers={"Retry-After": "5"},
            )
        queue: asyncio.Queue[Message] = asyncio.Queue(self.settings.sse_queue)
        client = Client(kind, workspace_id, queue, request.transport, key)
        client.written_at = asyncio.get_running_loop().time()
        self._clients.add(client)
        metrics.SSE_STREAMS.labels(kind).inc()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())
        return client

    def leave(self, client: Client) -> None:
        """Forget the client (once)."""
        if client not in self._clients:
            return
        self._clients.discard(client)
        metrics.SSE_STREAMS.labels(client.kind).dec()
        if client.kind == "execution":
            followers = self._executions.get(client.key)
            if followers is not None:
                followers.discard(client)
                if not followers:
                    del self._executions[client.key]
            return
        groups = self._live.get(client.workspace_id, {})
        group = groups.get(client.key)
        if group is not None:
            group.clients.discard(client)
            if not group.clients:
                del groups[client.key]
            if not groups:
                self._live.pop(client.workspace_id, None)
        if not self._live:
            self._starts.clear()

    def cut(self, client: Client, reason: str) -> None:
        """Cut the client off: it is forgotten and its connection aborted (its unsent messages
        and the transport's buffer are dropped at once)."""
        if client.cut is not None:
            return
        client.cut = reason
        metrics.SSE_CUT.labels(reason).inc()
        log_event(
            log,
            "sse_client_cut",
            level=logging.WARNING,
            reason=reason,
            kind=client.kind,
            workspace_id=str(client.workspace_id),
            queued=client.queue.qsize(),
        )
        self.leave(client)
        if client.transport is not None:
            client.transport.abort()
        # Wake a stream waiting for its next message: it then finds itself cut off.
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(END)

    def _end(self, client: Client) -> None:
        """Forget the client and end its stream after what it has queued (at once, its
        connection aborted, when its queue is full)."""
        self.leave(client)
        try:
            client.queue.put_nowait(END)
        except asyncio.QueueFull:
            if client.transport is not None:
                client.transport.abort()

    def _offer(self, client: Client, message: Message) -> None:
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.cut(client, "slow")

    async def _sweep(self) -> None:
        """While clients stream: forget each that closed its connection, cut off each whose
        write has waited past the write timeout, queue a heartbeat for each that has been quiet
        for nearly a heartbeat."""
        heartbeat_s = self.settings.sse_heartbeat_s
        timeout_s = self.settings.sse_write_timeout_s
        every = min(1.0, heartbeat_s / 4, timeout_s / 4)
        loop = asyncio.get_running_loop()
        while self._clients and not self._closed:
            await asyncio.sleep(every)
            now = loop.time()
            for client in list(self._clients):
                if client.transport is not None and client.transport.is_closing():
                    self._end(client)  # it left: forgotten now, not at its next heartbeat
                elif client.writing_since is not None and now - client.writing_since > timeout_s:
                    self.cut(client, "stalled")
                elif not client.beat_queued and now - client.written_at >= heartbeat_s - every:
                    client.beat_queued = True
                    self._offer(client, BEAT)

    async def projected(self, position: int) -> None:
        """Return once the projector has applied `position` (the process's one waiter polls);
        Disconnected when the hub shuts down first."""
        if self._closed:
            raise Disconnected("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        entry = (position, future)
        self._waits.append(entry)
        self._ensure_waiter()
        try:
            await future
        finally:
            self._waits.remove(entry)

    async def close(self) -> None:
        """End every stream (the application is shutting down) and stop following the log."""
        self._closed = True
        for client in list(self._clients):
            self._end(client)
        for _, future in self._waits:
            if not future.done():
                future.set_exception(Disconnected("the server is shutting down"))
        for task in (self._reader, self._waiter, self._sweeper):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ the reader

    async def _started(self) -> None:
        """Start following the log if nobody did yet; return once `last` is known."""
        if self._reader is None or self._reader.done():
            self._ready = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._read(self._ready))
        assert self._ready is not None
        await asyncio.shield(self._ready)

    async def _read(self, ready: asyncio.Future[None]) -> None:
        try:
            await self._begin()
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        log_event(log, "sse_hub_started", position=self.last)
        while self._clients and not self._closed:
            try:
                await self._pass()
            except Exception as exc:
                if OUTAGES.report(exc, where="sse hub") is None:
                    log.exception("sse_hub_failed")
                await asyncio.sleep(RETRY_S)
        log_event(log, "sse_hub_stopped", position=self.last)

    async def _begin(self) -> None:
        """Where to start: the stream's newest entry, then the log's head. An event past that
        head was relayed after that entry, so the reader will see it; one up to it is in the
        event store for every client that registers from now on. With Redis away the entry is
        found later (`_pass`): meanwhile the log is read, and the first entry's gap is too."""
        self._entry = None
        with contextlib.suppress(Exception):
            await self._newest_entry()
        async with self.pool.connection() as conn:
            self.last = await head_position(conn)

    async def _newest_entry(self) -> bytes:
        newest: Any = await self.redis.xrevrange(self.stream, count=1)
        self._entry = newest[0][0] if newest else b"0-0"
        return self._entry

    async def _pass(self) -> None:
        """One XREAD: hand out what it brings; nothing for a second, or Redis away: read the
        log itself if it is ahead."""
        reply: Any = None
        try:
            entry = self._entry if self._entry is not None else await self._newest_entry()
            reply = await self.redis.xread(
                {self.stream: entry}, count=READ_ENTRIES, block=self.block_ms
            )
        except Exception as exc:
            if is_outage(exc) != REDIS:
                raise
            OUTAGES.failed(REDIS, exc, where="sse hub")
            await asyncio.sleep(RETRY_S)
        if not reply:
            async with self.pool.connection() as conn:
                head = await head_position(conn)
            if head > self.last:
                await self._from_log(head)
            return
        OUTAGES.ok(REDIS)
        for _, entries in reply:
            for entry_id, fields in entries:
                await self._take(fields)
                self._entry = entry_id

    async def _take(self, fields: dict[bytes, bytes]) -> None:
        """Hand out one entry's events past `last`, after the gap before them (from the log).
        An entry all at or before `last` is skipped unread."""
        try:
            if int(fields[b"last"]) <= self.last:
                return
            events = unpack(fields)
        except (KeyError, ValueError):
            return  # not a pack of events: the log has what it displaced
        if events[0].position > self.last + 1:
            await self._from_log(events[0].position - 1)
        self._hand_out([e for e in events if e.position > self.last])

    async def _from_log(self, upto: int) -> None:
        """Hand out the events past `last` up to `upto`, read from the event store."""
        while self.last < upto:
            async with self.pool.connection() as conn:
                events = await read_log(conn, self.last, PAGE, upto)
            if not events:  # positions a rolled-back append never used
                self.last = upto
                return
            metrics.SSE_LOG_READS.inc(len(events))
            self._hand_out(events)

    def _hand_out(self, events: list[LoggedEvent]) -> None:
        """Offer `events` (in order, all past `last`) to their clients; `last` moves past them.
        No await: a client registering sees either all of them offered to it or none."""
        for e in events:
            followers = self._executions.get(e.originator_id)
            if followers:
                workspace, message = event_message(self.store, e)
                for client in list(followers):
                    if workspace == str(client.workspace_id):
                        self._offer(client, message)
            if e.topic in STATUS_TOPICS and self._live:
                self._status_seen = e.position
                if e.topic == STARTED_TOPIC and len(self._starts) < MAX_STARTS:
                    self._starts[e.originator_id] = e.position
                elif e.topic == QUEUED_TOPIC:  # saved with its start: it never ran then
                    self._starts.pop(e.originator_id, None)
        self.last = events[-1].position
        if self._live and self._status_seen > self._feed:
            self._ensure_waiter()

    # ------------------------------------------------------------ the projector waiter

    def _ensure_waiter(self) -> None:
        if not self._closed and (self._waiter is None or self._waiter.done()):
            self._waiter = asyncio.create_task(self._follow_projector())

    def _waiting(self) -> bool:
        waits = any(not future.done() for _, future in self._waits)
        return waits or bool(self._live and self._status_seen > self._feed)

    async def _follow_projector(self) -> None:
        """Poll the projector's position while a status change or a client waits for it; offer
        the changed rows of the subscribed workspaces once it has applied them."""
        loop = asyncio.get_running_loop()
        moved_at = loop.time()
        projected = 0
        while self._waiting() and not self._closed:
            try:
                async with self.pool.connection() as conn:
                    now = await projector_position(conn)
                    if now > self._feed and self._live:
                        await self._offer_changes(conn, now)
            except Exception as exc:
                if OUTAGES.report(exc, where="sse projector waiter") is None:
                    log.exception("sse_waiter_failed")
                await asyncio.sleep(RETRY_S)
                continue
            if now > projected:
                projected, moved_at = now, loop.time()
            for position, future in self._waits:
                if position <= projected and not future.done():
                    future.set_result(None)
            if self._waiting():
                slow = loop.time() - moved_at > SLOW_AFTER_S
                await asyncio.sleep(SLOW_POLL_S if slow else POLL_S)

    async def _offer_changes(self, conn: DictConnection, upto: int) -> None:
        """Offer the rows of the subscribed workspaces whose status changed in (feed, upto], in
        the order of the changes. A row found closed whose start the reader saw within that
        range is offered as started first (the status it had then), unless a later change was
        offered already (a read of more than a page: then it is sent closed only)."""
        after = offered = self._feed
        self._feeding = upto
        while True:
            cur = await conn.execute(
                "SELECT * FROM rm_executions WHERE workspace_id = ANY(%s)"
                " AND status_position > %s AND status_position <= %s"
                " ORDER BY status_position LIMIT %s",
                (list(self._live), after, upto, PAGE),
            )
            rows = await cur.fetchall()
            changes: list[tuple[int, dict[str, Any]]] = []
            for row in rows:
                started = self._starts.pop(row["id"], 0)
                if offered < started < row["status_position"]:
                    changes.append((started, as_started(row, started)))
                changes.append((row["status_position"], row))
            for position, change in sorted(changes, key=lambda c: c[0]):
                self._offer_change(change)
                offered = position
            if len(rows) < PAGE:
                break
            after = rows[-1]["status_position"]
        self._feed = max(self._feed, upto)
        self._starts = {k: v for k, v in self._starts.items() if v > self._feed}

    def _offer_change(self, row: dict[str, Any]) -> None:
        message: Message | None = None
        for group in list(self._live.get(row["workspace_id"], {}).values()):
            if matches(group.expr, row):
                message = message or change_message(row)
                for client in list(group.clients):
                    self._offer(client, message)


HUB: web.AppKey[Hub] = web.AppKey("linkflow_sse_hub", Hub)


class Stream:
    """One client's SSE response. The hub's sweeper queues a heartbeat when the stream has been
    quiet for nearly `LINKFLOW_SSE_HEARTBEAT_S`, and cuts the client off when a write has waited
    longer than `LINKFLOW_SSE_WRITE_TIMEOUT_S` (no timer per write)."""

    def __init__(self, hub: Hub, client: Client, response: web.StreamResponse) -> None:
        self.hub = hub
        self.client = client
        self.response = response
        self._loop = asyncio.get_running_loop()
        self._sent = metrics.SSE_MESSAGES.labels(client.kind)
        client.written_at = self._loop.time()

    async def write(self, frame: bytes) -> None:
        """Write; Disconnected when the client is gone or was cut off."""
        client = self.client
        if client.cut is not None:
            raise Disconnected(client.cut)
        client.writing_since = self._loop.time()
        try:
            await self.response.write(frame)
        except ConnectionError as exc:  # reset by the peer, or aborted by `Hub.cut`
            raise Disconnected(str(exc)) from None
        finally:
            client.writing_since = None
        client.written_at = self._loop.time()
        client.beat_queued = False

    async def send(self, message: Message) -> None:
        await self.write(message.frame)
        self._sent.inc()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await something before the stream can go on, with heartbeats meanwhile."""
        task = asyncio.ensure_future(awaitable)
        heartbeat_s = self.hub.settings.sse_heartbeat_s
        try:
            while True:
                quiet = self.client.written_at + heartbeat_s - self._loop.time()
                done, _ = await asyncio.wait({task}, timeout=max(quiet, 0))
                if done:
                    return task.result()
                await self.write(HEARTBEAT)
        finally:
            task.cancel()

    async def relay(self, sent: int) -> None:
        """Write the queued messages past position `sent`, several at a time when they have
        gathered, until a closing one has been written or the hub ends the stream."""
        queue = self.client.queue
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < WRITE_BATCH:
                batch.append(queue.get_nowait())
            frames: list[bytes] = []
            done = False
            for message in batch:
                if message is END:
                    done = True
                    break
                if message is BEAT:
                    frames.append(message.frame)
                elif message.position > sent:
                    frames.append(message.frame)
                    sent = message.position
                    if message.closing:
                        done = True
                        break
            if frames:
                await self.write(b"".join(frames))
                self._sent.inc(sum(frame is not HEARTBEAT for frame in frames))
            if done:
                return
