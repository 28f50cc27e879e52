"""`python -m bench.healthprobe INTERVAL_S URL…`: polls each URL (a gateway's `/health`) every
INTERVAL_S seconds until SIGTERM/SIGINT, then prints one JSON line: for each URL the samples
`[[sent_at (wall clock), latency_ms, status], …]` (status 0: no answer within 5 s or a
connection error).

A process of its own, with its own connection per URL, so that what it measures is the
gateway's answer and not the load generator's event loop or connection pool (the `overload`
shape's client sends hundreds of starts a second).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import aiohttp

TIMEOUT_S = 5.0


async def poll(
    session: aiohttp.ClientSession, url: str, interval_s: float, stop: asyncio.Event
) -> list[tuple[float, float, int]]:
    samples: list[tuple[float, float, int]] = []
    next_at = time.monotonic()
    while not stop.is_set():
        sent_at, t0 = time.time(), time.perf_counter()
        status = 0
        try:
            async with session.get(url) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        samples.append((sent_at, round((time.perf_counter() - t0) * 1000, 2), status))
        next_at += interval_s
        delay = next_at - time.monotonic()
        if delay < 0:  # a slow answer: the next poll goes now, the schedule restarts from here
            next_at, delay = time.monotonic(), 0
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass
    return samples


async def main_async(interval_s: float, urls: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=len(urls) * 2)
    ) as session:
        results = await asyncio.gather(*(poll(session, u, interval_s, stop) for u in urls))
    print(json.dumps(dict(zip(urls, results, strict=True))), flush=True)


def main() -> None:
    asyncio.run(main_async(float(sys.argv[1]), sys.argv[2:]))


if __name__ == "__main__":
    main()
