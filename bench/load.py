"""The load generator: starts executions over HTTP (spread round-robin over the gateways) in a
closed loop (N clients, each starting the next execution as soon as its start request answers;
completions per second over the window, counted from the system's own records) or an open loop
(arrivals on a fixed schedule; start→close latency from the client's send to the close time the
system recorded). Also the consumers' lag probe (projector, audit chain, signed checkpoints).
Used by `bench.__main__`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from bench.records import LinkFlowRecords, Records


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Starter:
    """Sends start requests (`{"input": {"n": i}}`), rotating over `urls`; counts refusals."""

    session: aiohttp.ClientSession
    urls: list[str]
    headers: dict[str, str]
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    async def start(self, n: int) -> str | None:
        url = self.urls[self.sent % len(self.urls)]
        self.sent += 1
        try:
            async with self.session.post(
                url, json={"input": {"n": n}}, headers=self.headers
            ) as resp:
                if resp.status != 202:
                    self.errors[str(resp.status)] += 1
                    return None
                return str((await resp.json())["execution_id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1
            return None


@dataclass
class ClosedLoop:
    executions_per_s: float
    started_per_s: float
    window: tuple[float, float]  # wall clock (since, until) of the measured window


async def closed_loop(
    starter: Starter,
    records: Records,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    max_backlog: int,
    settle_s: float = 120,
) -> ClosedLoop:
    """The maximum sustained completion rate. Clients pause while the records show more than
    `max_backlog` open executions, so the backlog (and the drain after) stays bounded."""
    started = 0
    started_in_window = 0
    room = asyncio.Event()
    room.set()
    begin = time.monotonic()
    window_from, end = begin + warmup_s, begin + warmup_s + duration_s
    wall = time.time() - begin

    async def governor() -> None:
        while time.monotonic() < end:
            if await records.running() > max_backlog:
                room.clear()
            else:
                room.set()
            await asyncio.sleep(0.1)
        room.set()

    async def client() -> None:
        nonlocal started, started_in_window
        while time.monotonic() < end:
            await room.wait()
            if time.monotonic() >= end:
                return
            if await starter.start(started) is not None:
                started += 1
                if window_from <= time.monotonic() < end:
                    started_in_window += 1

    await asyncio.gather(governor(), *(client() for _ in range(concurrency)))
    await records.settle(settle_s)
    window = (wall + window_from, wall + end)
    closed = await records.closed_between(*window)
    return ClosedLoop(
        round(closed / duration_s, 1), round(started_in_window / duration_s, 1), window
    )


@dataclass
class Arrival:
    execution_id: str | None
    sent_at: float  # wall clock when the client sent the start request
    api_ms: float
    measured: bool  # after the warm-up


async def open_loop(
    starter: Starter, rate: float, warmup_s: float, duration_s: float
) -> tuple[list[Arrival], float]:
    """Starts `rate` executions per second on a fixed schedule, whatever the answers; returns
    the arrivals and the client's worst lateness against its schedule (ms)."""
    arrivals: list[Arrival] = []
    begin = time.monotonic()
    late_s = 0.0

    async def one(i: int, measured: bool) -> None:
        sent_at, t0 = time.time(), time.perf_counter()
        execution_id = await starter.start(i)
        arrivals.append(Arrival(execution_id, sent_at, (time.perf_counter() - t0) * 1000, measured))

    tasks = []
    for i in range(int(rate * (warmup_s + duration_s))):
        due = begin + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        late_s = max(late_s, time.monotonic() - due)
        tasks.append(asyncio.create_task(one(i, i / rate >= warmup_s)))
    await asyncio.gather(*tasks)
    return arrivals, late_s * 1000


async def close_times(
    records: Records, ids: list[str], timeout_s: float
) -> dict[str, tuple[bool, float]]:
    """Close records of `ids`, polling until all closed or the deadline passed."""
    found: dict[str, tuple[bool, float]] = {}
    pending = ids
    deadline = time.monotonic() + timeout_s
    while pending:
        found.update(await records.close_times(pending))
        pending = [i for i in pending if i not in found]
        if pending and time.monotonic() > deadline:
            break
        if pending:
            await asyncio.sleep(0.2)
    return found


async def drain(records: Records, timeout_s: float) -> int:
    """Wait until no execution is open; returns how many still were at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        await records.settle(timeout_s)
        running = await records.running()
        if running == 0 or time.monotonic() > deadline:
            return running
        await asyncio.sleep(0.2)


class ConsumerLag:
    """Samples (time, event-log head, consumers' positions) every `interval_s`; a consumer's
    lag at a sample is the time until its position reached that sample's head."""

    def __init__(self, records: LinkFlowRecords, interval_s: float = 0.02) -> None:
        self.records = records
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, dict[str, int]]] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            head, positions = await self.records.positions()
            self.samples.append((time.time(), head, positions))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    def lags_ms(self, since: float, until: float, consumer: str = "projector") -> list[float]:
        lags: list[float] = []
        j = 0
        for i, (t, head, _) in enumerate(self.samples):
            j = max(j, i)
            while j < len(self.samples) and self.samples[j][2][consumer] < head:
                j += 1
            if j == len(self.samples):
                break  # never caught up while sampled: the ones after it did not either
            if since <= t < until:
                lags.append((self.samples[j][0] - t) * 1000)
        return lags


async def request_loop(
    starter: Starter, concurrency: int, warmup_s: float, duration_s: float
) -> tuple[float, list[float]]:
    """Start requests only, as fast as `concurrency` clients get answers: (accepted per second
    over the window, latencies in ms of the requests sent in the window)."""
    latencies: list[float] = []
    begin = time.monotonic()
    window_from, end = begin + warmup_s, begin + warmup_s + duration_s
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        while (sent := time.monotonic()) < end:
            ok = await starter.start(starter.sent) is not None
            if sent >= window_from:
                latencies.append((time.monotonic() - sent) * 1000)
                accepted += ok

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return accepted / duration_s, latencies
