"""A query's task ended before its connection closes (`infra.db.cancel_and_wait`) leaves no
socket registered in the event loop; a connection closed under a waiting query does, and the
suite's guard (tests/loop_guard.py) names it. The leak made a later test's connection fail
(`connection socket closed`, from the selector's ENOENT) when its socket got the same number:
the leadership watchdog's ping outlived its connection."""

from __future__ import annotations

import asyncio

from loop_guard import stale_registrations

from infra.db import cancel_and_wait, connect
from infra.settings import Settings


async def test_a_query_cancelled_and_waited_for_leaves_nothing_registered(
    fresh_settings: Settings,
) -> None:
    conn = await connect(fresh_settings)
    query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(30)"))
    await asyncio.sleep(0)  # the query is sent and waits on the socket
    await asyncio.wait_for(cancel_and_wait(query), timeout=5)  # not psycopg's 10 s
    assert query.cancelled()
    await conn.close()
    assert stale_registrations(asyncio.get_running_loop()) == []


async def test_closing_under_a_waiting_query_is_what_the_guard_names(
    fresh_settings: Settings,
) -> None:
    loop = asyncio.get_running_loop()
    conn = await connect(fresh_settings)
    fd = conn.pgconn.socket
    query = asyncio.ensure_future(conn.execute("SELECT pg_sleep(30)"))
    await asyncio.sleep(0)
    await conn.close()
    try:
        stale = stale_registrations(loop)
        assert [s for s in stale if s.startswith(f"fd={fd} ")], stale
    finally:
        loop.remove_reader(fd)  # clean up what the test made, before the guard looks
        await asyncio.gather(query, return_exceptions=True)
