"""How late the event loop runs what is due: a process whose loop is held (a long computation, a
large document parsed on it) answers every request that much later. `watch_loop` samples it
into `linkflow_event_loop_lag_seconds` (a histogram: its maximum bucket shows the worst holds).

Imported by `gateways.roles`.
"""

from __future__ import annotations

import asyncio
import contextlib

from infra import metrics

SAMPLE_EVERY_S = 0.25


async def watch_loop(stop: asyncio.Event, every_s: float = SAMPLE_EVERY_S) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + every_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        metrics.EVENT_LOOP_LAG.observe(max(loop.time() - due, 0.0))
