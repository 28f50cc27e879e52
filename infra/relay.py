"""The relay: follows the event store's notification log and XADDs every event, in order, to the
`events` stream, recording how far it got in `consumer_positions` ('relay').

It wakes on the recorder's NOTIFY (channel `linkflow_events`) or every half second, publishes
pages of up to 1,000 events in one pipelined round trip, as entries of up to 100 consecutive
events each (`infra.eventlog.pack`), then records the page's last position. A crash
between the two republishes the page (consumers skip what they already applied). Only one relay
publishes at a time: it holds a PostgreSQL advisory lock, so a second one waits as a standby.
While Redis is away the relay keeps its lock and publishes again every half second; when
PostgreSQL goes (and the lock with its session) it stops, and its supervisor starts it again
once PostgreSQL answers (infra.leader). Either outage is logged once (infra.outages).
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from infra import metrics
from infra.db import DictConnection, connect
from infra.eventlog import LoggedEvent, advance_position, load_position, pack, read_log
from infra.eventstore import EVENTS_TABLE
from infra.leader import hold_leadership
from infra.logging import get_logger, log_event
from infra.outages import OUTAGES, REDIS, is_outage
from infra.settings import Settings
from infra.streams import events_stream

log = get_logger(__name__)

NAME = "relay"
PAGE = 1000
# Events per stream entry: consumers pay per entry (parsing, acknowledging), so a run of events
# travels as one entry (`infra.eventlog.pack`).
ENTRY_EVENTS = 100
# After a page, how long to let commits gather before reading again (nothing waits on the
# relay: tasks reach workers by the fast path, engine.dispatch).
LINGER_S = 0.005
# While Redis is away, how long to wait before publishing again.
REDIS_RETRY_S = 0.5


class Relay:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.stream = events_stream(settings)
        self.position = 0

    async def publish(self, events: list[LoggedEvent]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(events), ENTRY_EVENTS):
                pipe.xadd(
                    self.stream,
                    pack(events[start : start + ENTRY_EVENTS]),  # type: ignore[arg-type]
                    maxlen=self.settings.events_stream_maxlen,
                    approximate=True,
                )
            await pipe.execute()
        OUTAGES.ok(REDIS)

    async def pump(self, conn: DictConnection) -> int:
        """Relay everything past the position; returns how many events were published. `conn`
        is in autocommit: a page costs one SELECT, one pipeline and one guarded UPDATE."""
        total = 0
        while True:
            events = await read_log(conn, self.position, PAGE)
            if not events:
                return total
            await self.publish(events)
            new = events[-1].position
            if not await advance_position(conn, NAME, self.position, new):
                self.position = await load_position(conn, NAME)
                continue
            self.position = new
            total += len(events)
            metrics.EVENTS_RELAYED.inc(len(events))
            metrics.RELAY_POSITION.set(new)
            if len(events) < PAGE:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        async with hold_leadership(self.settings, NAME, stop) as leadership:
            if leadership:
                await leadership.run(self._lead(stop))

    async def _lead(self, stop: asyncio.Event) -> None:
        """Relay until stopped. While Redis is away it keeps its lock and tries again every
        half second; a failure of PostgreSQL (its connections, and its lock with them) ends the
        run, and the role's supervisor starts it again (gateways.roles)."""
        conn = await connect(self.settings, autocommit=True)
        try:
            listener = await connect(self.settings, autocommit=True)
        except BaseException:
            await conn.close()
            raise
        try:
            await listener.execute(f"LISTEN {EVENTS_TABLE}")
            self.position = await load_position(conn, NAME)
            log_event(log, "relay_started", position=self.position)
            while not stop.is_set():
                try:
                    published = await self.pump(conn)
                except Exception as exc:
                    if is_outage(exc) != REDIS:
                        raise
                    OUTAGES.failed(REDIS, exc, where="relay")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=REDIS_RETRY_S)
                    continue
                if published:
                    # Events are flowing: let the next commits gather (fewer, larger
                    # entries, and fewer batches for every consumer), then read again.
                    await asyncio.sleep(LINGER_S)
                else:
                    await self._wait(listener, stop)
        finally:
            for connection in (listener, conn):
                with contextlib.suppress(Exception):
                    await connection.close()

    async def _wait(self, listener: DictConnection, stop: asyncio.Event) -> None:
        """Until a NOTIFY arrives or half a second passes (so a stop is seen quickly)."""
        if not stop.is_set():
            async for _ in listener.notifies(timeout=0.5, stop_after=1):
                pass
