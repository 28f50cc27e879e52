"""Helpers for tests that run LinkFlow's roles in-process or as `linkflow` processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateways.bootstrap import Container, bootstrap
from gateways.roles import RUNNERS
from infra.settings import Settings

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


@dataclass
class Roles:
    """Roles running as tasks in this event loop, each stoppable and restartable on its own."""

    container: Container
    running: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=dict)

    def start(self, role: str) -> None:
        stop = asyncio.Event()
        self.running[role] = (stop, asyncio.create_task(RUNNERS[role](self.container, stop)))

    async def stop(self, role: str) -> None:
        stop, task = self.running.pop(role)
        stop.set()
        await asyncio.wait_for(task, timeout=20)

    async def stop_all(self) -> None:
        for role in list(self.running):
            await self.stop(role)


@asynccontextmanager
async def roles(settings: Settings, *names: str) -> AsyncIterator[Roles]:
    container = await bootstrap(settings)
    running = Roles(container)
    for name in names:
        running.start(name)
    try:
        yield running
    finally:
        await running.stop_all()
        await container.close()


async def execution_row(container: Container, execution_id: Any) -> dict[str, Any] | None:
    async with container.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM rm_executions WHERE id = %s", (execution_id,))
        row = await cur.fetchone()
        await conn.commit()
        return row
