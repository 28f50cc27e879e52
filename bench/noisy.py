"""The `noisy` shape (issue 12): does one workspace's flood delay another's executions?

Layout `split`, two workspaces (two users), each with the same workflow (`--noisy-shape`:
`http-3`, the standard shape against the fast target, by default; `http-1`, one http_request
node; or `pure-3`). First workspace B runs alone: a warm-up of 20 executions, then
`--noisy-executions` (200) on a fixed schedule at `--noisy-rate` (10/s); its latency is each
execution's client send → close time in the read model, as the open loop measures it. Then
workspace A floods `--noisy-flood` (20,000) executions: `--noisy-concurrency` (64) clients
start the next one as soon as an answer comes, and wait Retry-After on a 429 (admission control
caps A's open executions at LINKFLOW_MAX_QUEUED_PER_WORKSPACE, default 10,000). Once A has
`--noisy-backlog` (2,000) executions open, B runs the same 200 at the same pace again. The line
has both p50/p95s and the ratio of the p95s (target ≤ 2), A's throughput and how deep A's
backlog was while B ran (open executions, task stream, matching's held tasks). The http shapes
call the target's recording endpoint, so for each of B's nodes the line also has where a hop's
time went: NodeScheduled → the call's arrival at the target (`hop_wait_*`: dispatch and
queueing) and NodeScheduled → the node's end (`hop_*`), from the event log.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.api import create_workflow, sign_up, start_once
from bench.eventlog import ExecutionLog, hop_times
from bench.load import Starter, ms, open_loop, pct
from bench.procs import ProcessProbe, progress
from bench.scenario import (
    QueueSampler,
    Reads,
    commit_of,
    measure_on_stack,
    reset_calls,
    target_calls,
)
from bench.shapes import PURE_3, http_recorded
from bench.stack import Layout, Stack, bench_settings

SHAPES = ("http-3", "http-1", "pure-3")
WARMUP = 20


def definition(shape: str, target: str) -> dict[str, Any]:
    """The shape, its http calls recorded by the target (`/call/…`: the same tiny answer as
    http-3's `/ok/…`), so that each hop's dispatch wait can be read."""
    if shape == "pure-3":
        return PURE_3
    return http_recorded(target, 3 if shape == "http-3" else 1)


class Flood:
    """Workspace A: `total` starts by `clients` closed-loop clients; a 429 waits Retry-After and
    tries again, so every one of the `total` is accepted in the end."""

    def __init__(
        self, session: aiohttp.ClientSession, urls: list[str], headers: dict[str, str], total: int
    ) -> None:
        self.session, self.urls, self.headers, self.total = session, urls, headers, total
        self.issued = 0
        self.accepted = 0
        self.refused_429 = 0
        self.errors: Counter[str] = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.ids: list[str] = []

    async def run(self, clients: int) -> None:
        await asyncio.gather(*(self._client() for _ in range(clients)))

    async def _client(self) -> None:
        while self.issued < self.total:
            n = self.issued
            self.issued += 1
            while True:
                url = self.urls[n % len(self.urls)]
                out = await start_once(self.session, url, self.headers, {"input": {"n": n}})
                if out.execution_id:
                    self.accepted += 1
                    self.ids.append(out.execution_id)
                    self.first_at = self.first_at or time.time()
                    self.last_at = time.time()
                    break
                if out.status == 429:
                    self.refused_429 += 1
                else:
                    self.errors[str(out.status or out.error)] += 1
                await asyncio.sleep(out.retry_after_s or 1.0)


async def run(args: argparse.Namespace, session: aiohttp.ClientSession, target: str) -> dict:
    layout = Layout("split", gateways=args.gateways, workers=args.workers or 1)
    stack = Stack(bench_settings(), layout, args.stack_env, args.code_root)
    line: dict[str, Any] = {
        "bench": "noisy",
        "system": "linkflow",
        "commit": commit_of(args.code_root),
        "layout": layout.describe(),
        "shape": args.noisy_shape,
        "env": args.stack_env,
    }
    logs = args.logs / "noisy" if args.logs else None
    return line | await measure_on_stack(
        stack,
        session,
        logs,
        lambda probe, reads: _measure(args, session, target, stack, probe, reads),
    )


async def _b_run(
    args: argparse.Namespace, starter: Starter, reads: Reads, label: str
) -> tuple[dict[str, Any], set[str]]:
    """B's executions at its pace; latency send → close (read model). Also their ids."""
    n, rate = args.noisy_executions, args.noisy_rate
    progress(f"noisy: B {label}: {n} executions at {rate}/s")
    arrivals, late_ms = await open_loop(starter, rate, 0.0, n / rate)
    ids = [a.execution_id for a in arrivals if a.execution_id]
    closes: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + args.drain_timeout
    while len(closes) < len(ids) and time.monotonic() < deadline:
        await reads.settle(args.drain_timeout)
        closes |= await reads.close_times([i for i in ids if i not in closes])
        if len(closes) < len(ids):
            await asyncio.sleep(0.2)
    latencies = [
        (closes[a.execution_id][1] - a.sent_at) * 1000 for a in arrivals if a.execution_id in closes
    ]
    figures = {
        "p50_ms": ms(pct(latencies, 0.50)),
        "p95_ms": ms(pct(latencies, 0.95)),
        "p99_ms": ms(pct(latencies, 0.99)),
        "max_ms": ms(max(latencies)) if latencies else None,
        "sent": len(arrivals),
        "start_errors": dict(starter.errors),
        "not_completed": sum(1 for s, _ in closes.values() if s != "completed"),
        "unclosed": len(ids) - len(closes),
        "client_late_max_ms": round(late_ms, 1),
    }
    starter.errors.clear()
    progress(f"noisy: B {label}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
    return figures, set(ids)


def hop_figures(log: ExecutionLog, calls: list[tuple[str, str, float]], ids: set[str]) -> dict:
    """Per node of B's executions: NodeScheduled → the call's arrival (`hop_wait`) and →
    the node's end (`hop`), p50/p95 in ms."""
    times = hop_times(log, calls, ids)
    return {
        "hop_wait_p50_ms": ms(pct(times["wait"], 0.50)),
        "hop_wait_p95_ms": ms(pct(times["wait"], 0.95)),
        "hop_p50_ms": ms(pct(times["node"], 0.50)),
        "hop_p95_ms": ms(pct(times["node"], 0.95)),
    }


async def _measure(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    target: str,
    stack: Stack,
    probe: ProcessProbe,
    reads: Reads,
) -> dict[str, Any]:
    api = f"{stack.gateways[0]}/api/v1"
    body = definition(args.noisy_shape, target)
    ws_a, headers_a = await sign_up(session, api)
    ws_b, headers_b = await sign_up(session, api)
    wf_a = await create_workflow(session, api, ws_a, headers_a, body)
    wf_b = await create_workflow(session, api, ws_b, headers_b, body)
    urls_a = [f"{g}/api/v1/workspaces/{ws_a}/workflows/{wf_a}/executions" for g in stack.gateways]
    urls_b = [f"{g}/api/v1/workspaces/{ws_b}/workflows/{wf_b}/executions" for g in stack.gateways]
    starter_b = Starter(session, urls_b, headers_b)

    for i in range(WARMUP):
        await starter_b.start(-1 - i)
    await reads.wait_closed([ws_b], args.drain_timeout)
    starter_b.errors.clear()
    await reset_calls(session, target)
    alone, alone_ids = await _b_run(args, starter_b, reads, "alone")

    sampler = QueueSampler(stack, session)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    flood = Flood(session, urls_a, headers_a, args.noisy_flood)
    probe.reset()
    progress(f"noisy: A floods {args.noisy_flood} with {args.noisy_concurrency} clients")
    flooding = asyncio.create_task(flood.run(args.noisy_concurrency))
    backlog = min(args.noisy_backlog, args.noisy_flood)
    while not flooding.done() and await reads.open_count(ws_a) < backlog:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    a_open_before = await reads.open_count(ws_a)
    a_accepted_before = flood.accepted
    during_sampler = QueueSampler(stack, session)
    stop_during = asyncio.Event()
    sampling_during = asyncio.create_task(during_sampler.run(stop_during))
    label = f"during A's flood (A open: {a_open_before})"
    during, during_ids = await _b_run(args, starter_b, reads, label)
    stop_during.set()
    await sampling_during
    a_open_after = await reads.open_count(ws_a)
    await flooding
    flood_sent_s = (flood.last_at or 0) - (flood.first_at or 0)
    left = await reads.wait_closed([ws_a, ws_b], args.drain_timeout)
    stop_sampling.set()
    await sampling
    cpu = probe.cpu_pct()
    if args.noisy_shape != "pure-3":
        log = await ExecutionLog.read(reads.conn)
        calls = await target_calls(session, target)
        alone |= hop_figures(log, calls, alone_ids)
        during |= hop_figures(log, calls, during_ids)
    a_closes = await reads.close_times(flood.ids)
    last_close = max((t for _, t in a_closes.values()), default=None)
    a_seconds = (last_close - flood.first_at) if last_close and flood.first_at else None
    ratio = (
        round(during["p95_ms"] / alone["p95_ms"], 2)
        if during["p95_ms"] and alone["p95_ms"]
        else None
    )
    return {
        "b_alone": alone,
        "b_during_flood": during,
        "p95_alone_ms": alone["p95_ms"],
        "p95_during_flood_ms": during["p95_ms"],
        "p95_ratio": ratio,
        "a_flood": args.noisy_flood,
        "a_accepted": flood.accepted,
        "a_refused_429": flood.refused_429,
        "a_errors": dict(flood.errors),
        "a_started_per_s": round(flood.accepted / flood_sent_s, 1) if flood_sent_s else None,
        "a_executions_per_s": round(len(a_closes) / a_seconds, 1) if a_seconds else None,
        "a_not_completed": sum(1 for s, _ in a_closes.values() if s != "completed"),
        "a_open_when_b_started": a_open_before,
        "a_open_when_b_ended": a_open_after,
        "a_accepted_when_b_started": a_accepted_before,
        **{f"{k}_during_b": v for k, v in during_sampler.figures().items()},
        **sampler.figures(),
        "left_open_after_drain": left,
        "rss_mb": probe.rss_mb(),
        "cpu_pct": cpu,
        "b_rate": args.noisy_rate,
        "b_executions": args.noisy_executions,
        "a_concurrency": args.noisy_concurrency,
        "a_backlog_before_b": backlog,
        "targets": {"p95_ratio<=2": ratio is not None and ratio <= 2},
    }
