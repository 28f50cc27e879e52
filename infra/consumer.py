"""Stream consumption on FastStream with LinkFlow's delivery rules, and the event-consumer base.

`GroupReader` reads one stream as one consumer group through two FastStream subscribers: one for
new entries (XREADGROUP, batches, manual ack) and one that reclaims entries left pending by a dead
consumer (XAUTOCLAIM, `min_idle_time`). FastStream stops a subscriber for good when its group
vanishes (Redis flushed); the reader's supervisor recreates the group at id 0 and restarts it.
What it relies on in FastStream beyond the documented API is in `infra.compat.faststream`.

`EventConsumer` applies the relayed event log exactly once: its read-model/engine change and its
position commit in one PostgreSQL transaction; entries at or below the position are duplicates;
a jump past the position, an idle period with the log ahead, or a Redis flush make it read the
missing range from the event store itself. A batch with nothing to apply opens no transaction:
the position moves in memory and is written with the next applied batch or within a second
(`save_position`); a restart before that reads those events again and applies nothing.
A batch or a watch pass that fails because PostgreSQL or Redis is away is not logged with a
traceback: `infra.outages` says once that the dependency is down (the batch stays pending).
Imported by `projections/` and `engine/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError
from eventsourcing.utils import get_topic
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis

from infra import metrics
from infra.compat.faststream import entries, raw_entries, raw_message, stopped
from infra.db import DictConnection, DictPool
from infra.eventlog import (
    LoggedEvent,
    advance_position,
    head_position,
    load_position,
    read_log,
    unpack,
)
from infra.eventstore import EventStore
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES, REDIS
from infra.streams import ensure_group

log = get_logger(__name__)

# How long `GroupReader.ack_soon` lets acknowledgements gather.
ACK_GATHER_S = 0.002

BatchHandler = Callable[[list[bytes], list[dict[bytes, bytes]]], Awaitable[None]]


def consumer_name(group: str) -> str:
    return f"{group}-{socket.gethostname()}-{os.getpid()}"


class GroupReader:
    """One consumer of one group on one stream, surviving flushes and reclaiming dead consumers'
    pending entries. The handler gets (entry ids, entry fields) and acknowledges them itself."""

    def __init__(
        self,
        broker: RedisBroker,
        redis: Redis,
        stream: str,
        group: str,
        handler: BatchHandler,
        max_records: int = 500,
        claim_idle_ms: int = 30_000,
        block_ms: int = 100,
        linger_ms: int = 0,
        on_reclaimed: BatchHandler | None = None,
    ) -> None:
        """`on_reclaimed` (default: `handler`) gets the entries reclaimed from dead consumers."""
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer_name(group)
        self.handler = handler
        self.linger_ms = linger_ms  # its owner may change it while it reads
        self._to_ack: list[bytes] = []
        self._flusher: asyncio.Future[None] | None = None

        async def handle(handler: BatchHandler, raw: Any) -> None:
            OUTAGES.ok(REDIS)  # FastStream just read this batch from Redis
            ids, fields = entries(raw)
            try:
                await handler(ids, fields)
            except Exception as exc:
                # Unacknowledged: the entries stay pending and are reclaimed after the idle time.
                if OUTAGES.report(exc, where=f"{group} batch") is None:
                    log.exception(
                        "batch_failed", extra={"fields": {"stream": stream, "group": group}}
                    )
            if self.linger_ms and len(ids) < max_records:
                # A short batch: let entries gather before the next read (fewer, larger
                # batches for a consumer that can wait; each batch costs a transaction).
                await asyncio.sleep(self.linger_ms / 1000)

        async def on_message(raw: Any) -> None:
            await handle(handler, raw)

        async def on_reclaimed_message(raw: Any) -> None:
            await handle(on_reclaimed or handler, raw)

        self.reader = broker.subscriber(
            stream=StreamSub(
                stream,
                group=group,
                consumer=self.consumer,
                batch=True,
                max_records=max_records,
                polling_interval=block_ms,
            ),
            ack_policy=AckPolicy.MANUAL,
            parser=raw_entries,
            decoder=raw_message,
        )
        self.reader(on_message)
        self.claimer = broker.subscriber(
            stream=StreamSub(
                stream,
                group=group,
                consumer=self.consumer,
                batch=True,
                min_idle_time=claim_idle_ms,
                polling_interval=1000,
            ),
            ack_policy=AckPolicy.MANUAL,
            parser=raw_entries,
            decoder=raw_message,
        )
        self.claimer(on_reclaimed_message)

    async def prepare(self) -> None:
        """Create the group (at id 0) before FastStream would create it at `$`."""
        await ensure_group(self.redis, self.stream, self.group)

    async def revive(self) -> bool:
        """Recreate the group and restart subscribers FastStream stopped; True if any was."""
        revived = False
        for sub in (self.reader, self.claimer):
            if stopped(sub):
                await ensure_group(self.redis, self.stream, self.group)
                await sub.start()
                revived = True
        if revived:
            log_event(log, "group_revived", stream=self.stream, group=self.group)
        return revived

    def ack_soon(self, entry_id: bytes) -> None:
        """Acknowledge and delete the entry within a few milliseconds, together with the
        others acknowledged meanwhile (one round trip for many; its effect is already durable,
        and an entry whose ack is lost is delivered again, which handlers tolerate)."""
        self._to_ack.append(entry_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(ACK_GATHER_S)
        await self.flush_acks()

    async def flush_acks(self) -> None:
        ids, self._to_ack = self._to_ack, []
        try:
            await self.ack(ids, delete=True)
        except Exception as exc:
            # Left pending: reclaimed and delivered again after the idle time.
            if OUTAGES.report(exc, where=f"{self.group} ack") is None:
                log.exception("ack_failed", extra={"fields": {"stream": self.stream}})

    async def deliveries(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """How many times each pending entry was delivered (XPENDING), reclaims included."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
            replies = await pipe.execute()
        return {
            _bytes(item["message_id"]): int(item["times_delivered"])
            for reply in replies
            for item in reply
        }

    async def ack(self, ids: Sequence[bytes], delete: bool = False) -> None:
        if not ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            if delete:
                pipe.xdel(self.stream, *ids)
            await pipe.execute()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class EventConsumer:
    """Base of the consumers of the relayed event log (projector, matching, timers).

    Subclasses implement `apply` (inside the transaction that also moves the position) and may
    implement `after_commit` (effects outside PostgreSQL, e.g. waking a timer loop).
    """

    name = "consumer"
    page = 500
    # The event classes `apply` looks at; others are not decoded (the position still passes
    # them). Empty: every event.
    handles: tuple[type, ...] = ()
    # How long to let entries gather after a short batch (0: read again at once). Consumers
    # nothing waits on (timers registering due times, callbacks, schedules) trade a little
    # delay for far fewer batches.
    linger_ms = 0
    # Stream entries per read: each holds up to 100 events (`infra.relay.ENTRY_EVENTS`).
    batch_entries = 10

    def __init__(
        self,
        store: EventStore,
        pool: DictPool,
        redis: Redis,
        broker: RedisBroker,
        stream: str,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.store = store
        self.topics = frozenset(get_topic(cls) for cls in self.handles)
        self.pool = pool
        self.redis = redis
        self.broker = broker
        self.position = 0  # what has been applied (or had nothing to apply)
        self.saved_position = 0  # the position as PostgreSQL has it (<= position)
        self.lock = asyncio.Lock()
        self.last_activity = time.monotonic()
        self.reader = GroupReader(
            broker,
            redis,
            stream,
            self.name,
            self.on_entries,
            max_records=self.batch_entries,
            claim_idle_ms=claim_idle_ms,
            linger_ms=self.linger_ms,
        )

    async def apply(self, conn: DictConnection, events: list[tuple[LoggedEvent, Any]]) -> None:
        raise NotImplementedError

    async def after_commit(self, events: list[tuple[LoggedEvent, Any]]) -> None:
        return None

    async def prepare(self) -> None:
        await self.reader.prepare()
        await self.prepare_state()
        async with self.pool.connection() as conn:
            self.position = self.saved_position = await load_position(conn, self.name)
            await conn.commit()
        metrics.CONSUMER_POSITION.labels(self.name).set(self.position)

    async def on_entries(self, ids: list[bytes], entries: list[dict[bytes, bytes]]) -> None:
        events = sorted(self._parse(ids, entries), key=lambda e: e.position)
        async with self.lock:
            try:
                await self._apply_fresh(events)
            except PositionMoved:
                await self._reload_position()
                await self._apply_fresh(events)
            self.last_activity = time.monotonic()
        await self.reader.ack(ids)

    def _parse(self, ids: list[bytes], entries: list[dict[bytes, bytes]]) -> list[LoggedEvent]:
        """Entries that are not packs of relayed events are dropped (acked with the batch) and
        logged: the event store is the truth, and real events they displaced are read from it."""
        events: list[LoggedEvent] = []
        for entry_id, fields in zip(ids, entries, strict=True):
            try:
                events.extend(unpack(fields))
            except ValueError:
                metrics.MALFORMED_ENTRIES.labels(self.name).inc()
                log_event(log, "malformed_entry_dropped", consumer=self.name, entry=entry_id)
        return events

    async def _apply_fresh(self, events: list[LoggedEvent]) -> None:
        fresh = [e for e in events if e.position > self.position]
        if fresh and fresh[0].position > self.position + 1:
            await self._catch_up(upto=fresh[0].position - 1)
            fresh = [e for e in fresh if e.position > self.position]
        if fresh:
            await self._commit(fresh)

    async def catch_up(self) -> int:
        """Apply whatever the event store has past our position; returns how many events."""
        async with self.lock:
            return await self._catch_up(upto=None)

    async def _catch_up(self, upto: int | None) -> int:
        total = 0
        while True:
            async with self.pool.connection() as conn:
                events = await read_log(conn, self.position, self.page, upto)
                await conn.commit()
            if not events:
                return total
            await self._commit(events)
            total += len(events)
            metrics.CONSUMER_CATCHUP.labels(self.name).inc(len(events))

    def decode_batch(self, events: list[LoggedEvent]) -> list[tuple[LoggedEvent, Any]]:
        """The events `apply` looks at, decoded: those of the `handles` types. A consumer may
        narrow this further on what the entry shows without decoding (its aggregate id)."""
        return [(e, self.decode(e)) for e in events if not self.topics or e.topic in self.topics]

    def _decodable(self, e: LoggedEvent) -> bool:
        """False (logged, counted) for an event in the log that cannot be decoded (e.g. stored
        before the nesting limits, deeper than the JSON decoder goes): it is skipped rather than
        stopping the consumer for good; decoding it would fail the same way every time."""
        if self.topics and e.topic not in self.topics:
            return True
        try:
            self.decode(e)
        except MapperDeserialisationError as exc:
            metrics.UNDECODABLE_EVENTS.labels(self.name).inc()
            log_event(
                log,
                "undecodable_event_skipped",
                level=logging.ERROR,
                consumer=self.name,
                position=e.position,
                topic=e.topic,
                error=str(exc)[:200],
            )
            return False
        return True

    def decode(self, e: LoggedEvent) -> Any:
        return self.store.decode(e.originator_id, e.originator_version, e.topic, e.state)

    async def _commit(self, events: list[LoggedEvent]) -> None:
        try:
            decoded = self.decode_batch(events)
        except MapperDeserialisationError:
            decoded = self.decode_batch([e for e in events if self._decodable(e)])
        new_position = events[-1].position
        metrics.CONSUMER_EVENTS.labels(self.name).inc(len(events))
        if not decoded:  # nothing to apply: no transaction (see the module's docstring)
            self.position = new_position
            metrics.CONSUMER_POSITION.labels(self.name).set(new_position)
            return
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await self.apply(conn, decoded)
                moved = await advance_position(conn, self.name, self.saved_position, new_position)
                if not moved:
                    raise PositionMoved(self.name)
        self.position = self.saved_position = new_position
        metrics.CONSUMER_POSITION.labels(self.name).set(new_position)
        await self.after_commit(decoded)

    async def save_position(self) -> None:
        """Write the position that batches with nothing to apply moved in memory."""
        async with self.lock:
            if self.position == self.saved_position:
                return
            async with self.pool.connection() as conn:
                moved = await advance_position(conn, self.name, self.saved_position, self.position)
                await conn.commit()
            if not moved:
                raise PositionMoved(self.name)
            self.saved_position = self.position

    async def _reload_position(self) -> None:
        """Another process moved our position: it applied events, so reload what we keep."""
        await self.prepare_state()
        async with self.pool.connection() as conn:
            self.position = self.saved_position = await load_position(conn, self.name)
            await conn.commit()

    async def prepare_state(self) -> None:
        """Load what the consumer keeps in memory from its tables (at start, and when another
        process moved its position). Nothing by default."""
        return None

    async def watch(self, stop: asyncio.Event, idle_s: float = 1.0) -> None:
        """Catch up when idle with the log ahead, and revive the group after a Redis flush."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=idle_s / 2)
            except TimeoutError:
                pass
            try:
                await self.save_position()
                if stop.is_set():
                    return
                if await self.reader.revive():
                    await self.catch_up()
                if time.monotonic() - self.last_activity >= idle_s:
                    async with self.pool.connection() as conn:
                        head = await head_position(conn)
                        await conn.commit()
                    if head > self.position:
                        caught = await self.catch_up()
                        if caught:
                            log_event(log, "caught_up", consumer=self.name, events=caught)
                    self.last_activity = time.monotonic()
            except PositionMoved:
                with OUTAGES.guard("consumer watch failed", logger=log):
                    async with self.lock:
                        await self._reload_position()
            except Exception as exc:
                # PostgreSQL or Redis away: said once (infra.outages), tried again next pass.
                if OUTAGES.report(exc, where=f"{self.name} watch") is None:
                    log.exception(
                        "consumer watch failed", extra={"fields": {"consumer": self.name}}
                    )


class PositionMoved(RuntimeError):
    """Another process advanced this consumer's position; ours is stale."""
