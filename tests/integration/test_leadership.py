"""Single-active leadership (infra.leader) when the lock's PostgreSQL session goes: the leader
stops leading (its work cancelled, `LeadershipLost`) before a standby takes the lock; a session
that no longer answers is given up within `pg_wait_s`; a standby whose connection fails says so
(its supervisor starts it again). A fault proxy stands between the contender and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from faultproxy import FaultProxy
from stack import eventually

from infra.leader import CHECK_S, LeadershipLost, hold_leadership
from infra.settings import Settings


@pytest.fixture
def proxy(settings: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(settings.pg_host, settings.pg_port) as running:
        yield running


def through(settings: Settings, proxy: FaultProxy, **overrides: object) -> Settings:
    return settings.model_copy(update={"pg_port": proxy.port, **overrides})


async def standing_by(caplog: pytest.LogCaptureFixture, name: str) -> None:
    """Until a contender for `name` was refused the lock (it logs `standby` once)."""

    async def refused() -> bool:
        return any(
            r.getMessage() == "standby" and r.fields["name"] == name  # type: ignore[attr-defined]
            for r in caplog.records
        )

    await eventually(refused, timeout=5)


async def test_the_leader_stops_before_a_standby_takes_over(
    settings: Settings, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="infra.leader")
    name = f"test-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    cancelled = asyncio.Event()
    times: dict[str, float] = {}

    async def work() -> None:
        try:
            await stop.wait()
        except asyncio.CancelledError:
            times["leader_stops"] = time.monotonic()  # the leader's work stops here
            cancelled.set()
            raise

    async def standby() -> None:
        async with hold_leadership(settings, name, stop, retry_s=0.05) as leadership:
            assert leadership
            times["standby_leads"] = time.monotonic()

    async with hold_leadership(through(settings, proxy), name, stop) as leadership:
        assert leadership
        waiting = asyncio.create_task(standby())
        leading = asyncio.create_task(leadership.run(work()))
        await standing_by(caplog, name)
        assert not waiting.done() and not leading.done()
        proxy.cut()  # the leader's session ends (like a PostgreSQL restart)
        cut_at = time.monotonic()
        with pytest.raises(LeadershipLost):
            await leading
    assert cancelled.is_set()
    await asyncio.wait_for(waiting, timeout=5)
    assert times["leader_stops"] - cut_at < 1.0
    assert times["leader_stops"] <= times["standby_leads"]  # never two leaders


async def test_a_silent_session_is_given_up_within_the_wait(
    settings: Settings, proxy: FaultProxy
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    proxied = through(settings, proxy, pg_wait_s=1.0)
    async with hold_leadership(proxied, name, stop) as leadership:
        assert leadership
        proxy.cut(freeze=True)  # a partition: no error, no answer
        frozen_at = time.monotonic()
        with pytest.raises(LeadershipLost) as lost:
            await leadership.run(stop.wait())
        elapsed = time.monotonic() - frozen_at
    assert isinstance(lost.value.__cause__, TimeoutError)
    assert elapsed <= CHECK_S + proxied.pg_wait_s + 0.5, elapsed


async def test_a_standby_whose_connection_fails_raises(
    settings: Settings, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="infra.leader")
    name = f"test-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    async with hold_leadership(settings, name, stop) as leadership:  # someone leads
        assert leadership

        async def standby() -> None:
            async with hold_leadership(through(settings, proxy), name, stop, retry_s=0.05):
                raise AssertionError("the standby must not lead")

        waiting = asyncio.create_task(standby())
        await standing_by(caplog, name)
        proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(waiting, timeout=2)
