"""Single-active roles: a PostgreSQL session advisory lock per role name. A second process of the
same role waits as a hot standby and takes over when the holder's connection ends.

The lock lives exactly as long as the session that took it: when that connection ends
(PostgreSQL restarted, the network cut it) the lock is gone and a standby may take it. So the
leader watches its lock's connection — it notices a closed connection at once, and one that no
longer answers within `pg_wait_s` by a ping every second — and then stops leading:
`Leadership.run` cancels the role's work and raises `LeadershipLost` (logged once,
`leadership_lost`). The role's supervisor (gateways.roles) starts the role again, which waits for
the lock like any standby; a standby whose connection fails is restarted the same way. The
leadership session asks the server to drop it after ~11 s of network silence (TCP keepalives),
well after the leader itself gave up (≤ 4 s): two processes never lead at once.

`linkflow_leader{name}` is 1 in the process that leads. Used by infra.relay and gateways.roles.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from infra import metrics
from infra.db import DictConnection, cancel_and_wait, connect
from infra.logging import get_logger, log_event
from infra.outages import describe
from infra.settings import Settings

log = get_logger(__name__)

T = TypeVar("T")
CHECK_S = 1.0
# The server drops a silent leadership session after idle + interval * count = 11 s.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"
)


class LeadershipLost(RuntimeError):
    """The lock of a single-active role went with its connection: this process no longer
    leads (raised from the connection's error)."""


class Leadership:
    """What `hold_leadership` yields: truthy when this process leads `name`."""

    def __init__(self, name: str, acquired: bool) -> None:
        self.name = name
        self.acquired = acquired
        self.lost = asyncio.Event()
        self.cause: BaseException | None = None

    def __bool__(self) -> bool:
        return self.acquired

    def lose(self, cause: BaseException) -> None:
        if self.lost.is_set():
            return
        self.cause = cause
        self.lost.set()
        metrics.LEADER.labels(self.name).set(0)
        log_event(
            log, "leadership_lost", level=logging.WARNING, name=self.name, error=describe(cause)
        )

    async def run(self, work: Awaitable[T]) -> T:
        """Run `work` while leading: when the lock is lost, `work` is cancelled and
        `LeadershipLost` raised."""
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled() and self.lost.is_set():
            raise LeadershipLost(self.name) from self.cause
        return task.result()


@asynccontextmanager
async def hold_leadership(
    settings: Settings, name: str, stop: asyncio.Event, retry_s: float = 1.0
) -> AsyncIterator[Leadership]:
    """Yields a truthy `Leadership` once this process holds the lock for `name` (run the role's
    work through its `run`), or a falsy one if stopped first. A failure of the connection
    while waiting for the lock is raised (the caller retries)."""
    metrics.LEADER.labels(name).set(0)
    conn = await connect(settings, application_name=f"linkflow:{name}:{os.getpid()}")
    watchdog: asyncio.Task[None] | None = None
    try:
        await conn.execute(_KEEPALIVES)
        if not await _acquire(conn, name, stop, retry_s):
            yield Leadership(name, acquired=False)
            return
        leadership = Leadership(name, acquired=True)
        metrics.LEADER.labels(name).set(1)
        log_event(log, "leadership_acquired", name=name)
        watchdog = asyncio.create_task(_watch(conn, leadership, settings.pg_wait_s))
        yield leadership
    finally:
        metrics.LEADER.labels(name).set(0)
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        with suppress(Exception):
            await conn.close()


async def _acquire(conn: DictConnection, name: str, stop: asyncio.Event, retry_s: float) -> bool:
    announced = False
    while not stop.is_set():
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s)) AS ok", (f"linkflow:{name}",)
        )
        row = await cur.fetchone()
        if row and row["ok"]:
            return True
        if not announced:
            log_event(log, "standby", name=name)
            announced = True
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=retry_s)
    return False


async def _watch(conn: DictConnection, leadership: Leadership, wait_s: float) -> None:
    """Until the lock's connection fails: wake on anything the server sends (a termination
    notice, a closed socket) or every CHECK_S to ping it; then `leadership.lose`."""
    ping: asyncio.Future[Any] | None = None
    try:
        while True:
            async for _ in conn.notifies(timeout=CHECK_S, stop_after=1):
                pass
            ping = asyncio.ensure_future(conn.execute("SELECT 1"))
            done, _ = await asyncio.wait({ping}, timeout=wait_s)
            if not done:
                raise TimeoutError(f"the lock's connection did not answer within {wait_s:g} s")
            ping.result()
    except Exception as exc:
        leadership.lose(exc)
    finally:
        if ping is not None:  # ended before the connection closes (infra.db.cancel_and_wait)
            await cancel_and_wait(ping)
