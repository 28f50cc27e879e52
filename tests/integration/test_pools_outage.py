"""The PostgreSQL pools of a process (infra.db's async pool and the event store's) through a
fault proxy: a connection that died with the server is not handed out, a checkout while the
server is away fails within `pg_wait_s`, a partitioned connection does not hold a checkout, and
the pools connect again as soon as the server is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError
from faultproxy import FaultProxy
from psycopg_pool import PoolTimeout

from gateways.bootstrap import Container, bootstrap
from infra.db import CHECK_BYPASS_S, DictPool, open_pool
from infra.eventstore import EventStore
from infra.outages import OUTAGES
from infra.settings import Settings


@pytest.fixture
def proxy(settings: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(settings.pg_host, settings.pg_port) as running:
        yield running


@pytest.fixture
async def pool(settings: Settings, proxy: FaultProxy) -> AsyncIterator[DictPool]:
    opened = await open_pool(settings.model_copy(update={"pg_port": proxy.port}), max_size=4)
    try:
        yield opened
    finally:
        proxy.restore()
        await opened.close()


@pytest.fixture
async def container(settings: Settings, proxy: FaultProxy) -> AsyncIterator[Container]:
    built = await bootstrap(settings.model_copy(update={"pg_port": proxy.port}))
    try:
        yield built
    finally:
        proxy.restore()
        await built.close()


async def select_one(pool: DictPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 AS one")
        row = await cur.fetchone()
        assert row is not None
        return int(row["one"])


async def test_a_connection_that_died_with_the_server_is_not_handed_out(
    pool: DictPool, proxy: FaultProxy
) -> None:
    assert await asyncio.gather(*(select_one(pool) for _ in range(4))) == [1] * 4
    proxy.cut()  # every pooled connection dies, as in a restart
    await asyncio.sleep(CHECK_BYPASS_S)  # the server is away a moment at least
    proxy.restore()
    started = time.monotonic()
    assert await asyncio.gather(*(select_one(pool) for _ in range(4))) == [1] * 4
    assert time.monotonic() - started < 2.0


async def test_a_checkout_while_the_server_is_away_fails_within_the_wait(
    pool: DictPool, proxy: FaultProxy, settings: Settings
) -> None:
    assert await select_one(pool) == 1
    await asyncio.sleep(CHECK_BYPASS_S)  # a connection used this recently goes unchecked
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        await select_one(pool)
    elapsed = time.monotonic() - started
    assert settings.pg_wait_s - 0.1 <= elapsed <= settings.pg_wait_s + 1.0, elapsed
    assert OUTAGES.report(PoolTimeout("x")) == "postgres"
    # Back as soon as the server is, however long the pool's retries of the lost connection
    # have been backing off meanwhile.
    proxy.restore()
    started = time.monotonic()
    assert await select_one(pool) == 1
    assert time.monotonic() - started < 1.0
    assert not OUTAGES.is_down("postgres")  # the pool's check said it answers again


async def test_a_partitioned_connection_does_not_hold_the_checkout(
    pool: DictPool, proxy: FaultProxy, settings: Settings
) -> None:
    assert await select_one(pool) == 1
    await asyncio.sleep(CHECK_BYPASS_S)  # a connection used this recently goes unchecked
    proxy.cut(freeze=True)  # open connections stay, silent; new ones hang
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        await select_one(pool)
    assert time.monotonic() - started <= settings.pg_wait_s + 1.0
    proxy.restore()
    assert await select_one(pool) == 1


def read_events(store: EventStore) -> int:
    """A read of the event store (one query on its pool): the events of an unknown aggregate."""
    return len(store.recorder.select_events(uuid.uuid4()))  # type: ignore[attr-defined]


async def test_the_event_store_fails_fast_and_comes_back(
    container: Container, proxy: FaultProxy, settings: Settings
) -> None:
    assert await container.bus.run(read_events) == 0  # its pool holds a connection now
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreOperationalError):
        await container.bus.run(read_events)
    assert time.monotonic() - started <= settings.pg_wait_s + 1.0
    proxy.restore()
    started = time.monotonic()
    assert await container.bus.run(read_events) == 0  # no stale connection, no long back-off
    assert time.monotonic() - started < 1.5
