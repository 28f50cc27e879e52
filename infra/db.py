"""PostgreSQL access for async code: a psycopg 3 async connection pool and small query helpers,
and the bounds on waiting for PostgreSQL that every pool of a process shares.

While PostgreSQL is away nothing waits longer than `LINKFLOW_PG_WAIT_S` for a connection (pool
checkout, connect); a pooled connection is checked before use, so one that died with a server
restart is replaced instead of failing its first query; a pool retries a lost connection for
`pg_wait_s` at most and then connects again on demand, so it is back as soon as PostgreSQL is.

Everything outside `domain/` may import this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from psycopg import AsyncConnection, OperationalError
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from infra.compat.psycopg_pool import Check, set_connect_kwarg, set_reconnect_timeout, wrap_check
from infra.outages import OUTAGES, POSTGRES
from infra.settings import Settings

# A connection handed out this recently is handed out again unchecked (HikariCP's "alive
# bypass window", 500 ms by default): under load every checkout would otherwise cost a round
# trip. One that has sat in the pool longer — the ones a restart leaves behind — is checked.
CHECK_BYPASS_S = 0.5

# Every connection LinkFlow opens uses `row_factory=dict_row`: rows are dicts keyed by column.
DictConnection: TypeAlias = AsyncConnection[DictRow]
DictPool: TypeAlias = AsyncConnectionPool[DictConnection]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` (a query on a connection) and wait until it has ended, before the
    connection is closed. A task still waiting on a connection's socket when the socket closes
    leaves the socket's number registered in the event loop; the next socket given that number
    then fails to connect (`connection socket closed`, from the selector's ENOENT). psycopg
    answers a first cancel by asking the server to cancel the query (up to 10 s against an
    unreachable one): it is cancelled again every 50 ms until it gives up."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled():
        task.exception()  # retrieved: an error of a query being abandoned is not news


def _checker(wait_s: float) -> Callable[[DictConnection], Awaitable[None]]:
    """The pool's check before it hands out a connection (one empty query): a dead one is
    discarded and another taken or made; one that answers shows PostgreSQL is up. One that does
    not answer within `wait_s` (a network partition: no error, no answer) is closed and
    discarded too, instead of holding the checkout until TCP gives up."""

    async def check(conn: DictConnection) -> None:
        if _recently_handed_out(conn):
            return
        ping = asyncio.ensure_future(AsyncConnectionPool.check_connection(conn))
        done, _ = await asyncio.wait({ping}, timeout=wait_s)
        if not done:
            await cancel_and_wait(ping)  # before closing: see cancel_and_wait
            await conn.close()
            raise OperationalError(f"no answer to the pool's check within {wait_s:g} s")
        ping.result()
        OUTAGES.ok(POSTGRES)

    return check


async def open_pool(settings: Settings, min_size: int = 1, max_size: int = 8) -> DictPool:
    pool: DictPool = AsyncConnectionPool(
        settings.conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={
            "row_factory": dict_row,
            "autocommit": False,
            "connect_timeout": settings.pg_connect_timeout,
            # No parallel query: LinkFlow's reads are keyset pages, counts and rollups that
            # serve many clients at once; starting workers cost more than they saved (a
            # filtered first page over 1,000,000 executions: 24.6 ms median with them, 9.2 ms
            # without, on 2 cores) and they take cores from the engine.
            "options": "-c max_parallel_workers_per_gather=0",
        },
        open=False,
        check=_checker(settings.pg_wait_s),
        timeout=settings.pg_wait_s,  # checkout: PoolTimeout (answered 503) past it
        # A lost connection is retried with back-off (1 s, 2 s, …) for this long, then given
        # up; the next checkout that waits makes a new one at once. The library's 5 minutes
        # would leave the pool waiting out a long back-off after PostgreSQL is back.
        reconnect_timeout=settings.pg_wait_s,
    )
    # Not waiting for the first connections: a process started while PostgreSQL is away
    # serves (503 `unavailable` for what needs it) and connects once it is back.
    await pool.open(wait=False)
    return pool


def bound_sync_pool(pool: Any, settings: Settings) -> None:
    """The same bounds for a synchronous psycopg_pool.ConnectionPool built by a library (the
    event store's, `eventsourcing.postgres`), whose settings do not reach these: the connect
    timeout of each new connection, how long a lost one is retried before the pool connects
    again on demand, and (on its pre-ping check) telling `OUTAGES` that PostgreSQL answers.
    Set after the fact through `infra.compat.psycopg_pool`."""
    set_connect_kwarg(pool, "connect_timeout", settings.pg_connect_timeout)
    set_reconnect_timeout(pool, settings.pg_wait_s)
    wrap_check(pool, _bypassed_and_reported)


def _bypassed_and_reported(check: Check) -> Check:
    """`check`, skipped for a connection handed out within CHECK_BYPASS_S; a connection that
    passes it shows PostgreSQL is up."""

    def checked(conn: Any) -> None:
        if _recently_handed_out(conn):
            return
        check(conn)
        OUTAGES.ok(POSTGRES)

    return checked


def _recently_handed_out(conn: Any) -> bool:
    """Whether the pool handed `conn` out within CHECK_BYPASS_S; notes that it does now."""
    now = time.monotonic()
    recent = now - getattr(conn, "_linkflow_handed_out", float("-inf")) < CHECK_BYPASS_S
    conn._linkflow_handed_out = now
    return recent


async def connect(settings: Settings, autocommit: bool = True, **kwargs: Any) -> DictConnection:
    """A connection of its own (not pooled); `kwargs` go to psycopg (e.g. application_name)."""
    conn = await AsyncConnection.connect(
        settings.conninfo,
        autocommit=autocommit,
        row_factory=dict_row,
        connect_timeout=settings.pg_connect_timeout,
        **kwargs,
    )
    OUTAGES.ok(POSTGRES)
    return conn
