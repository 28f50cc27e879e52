"""Single-active roles: a PostgreSQL session advisory lock per role name. A second process of the
same role waits as a hot standby and takes over when the holder's connection ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from infra.db import connect
from infra.logging import get_logger, log_event
from infra.settings import Settings

log = get_logger(__name__)


@asynccontextmanager
async def hold_leadership(
    settings: Settings, name: str, stop: asyncio.Event, retry_s: float = 1.0
) -> AsyncIterator[bool]:
    """Yields True once this process holds the lock for `name`, or False if stopped first."""
    conn = await connect(settings, autocommit=True)
    try:
        announced = False
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s)) AS ok", (f"linkflow:{name}",)
            )
            row = await cur.fetchone()
            if row and row["ok"]:
                log_event(log, "leadership_acquired", name=name)
                yield True
                return
            if not announced:
                log_event(log, "standby", name=name)
                announced = True
            try:
                await asyncio.wait_for(stop.wait(), timeout=retry_s)
            except TimeoutError:
                pass
        yield False
    finally:
        await conn.close()
