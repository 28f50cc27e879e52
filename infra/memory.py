"""The collector's pauses and giving memory back after a burst.

After start-up each role's process holds ~110,000 objects (modules, the container) that live as
long as it does; a full collection walks them all, ~50–70 ms on the reference machine, a pause
that every request and batch in flight waits out (the event log's pages of 1,000 events showed
it as their p95). `freeze_startup_objects` moves them out of the collector's reach (`gc.freeze`),
so a full collection walks only what was made since.

Giving memory back after a burst. CPython returns its small-object arenas to the system when
they empty, but what it took from the C allocator (strings, JSON documents and buffers over 512
bytes) stays in glibc's free lists; `malloc_trim(0)` hands the free pages back. Each process runs
`trim_loop`, so its resident size falls back towards its steady state once a burst is over.

Imported by `gateways.roles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc

from infra.logging import get_logger

log = get_logger(__name__)

TRIM_EVERY_S = 10.0


def freeze_startup_objects() -> None:
    """Collect once, then freeze what is alive (see the module's docstring). Call it once,
    when the process has started (imports done, container built)."""
    gc.collect()
    gc.freeze()


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def trim_loop(stop: asyncio.Event, every_s: float = TRIM_EVERY_S) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        trim()
