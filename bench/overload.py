"""The `overload` shape (issue 12): a slow target offered ten times what the workers can do.

Layout `split`. The workflow is one `http_request` node (`timeout_s` 10, `retry.max_attempts`
3) calling `GET /call/{execution id}/call?sleep=S` on the harness's target, which answers after
S seconds (default 1) and records every call with its arrival time. Workers run
`--worker-concurrency` (64) tasks at once, so the capacity is 64 executions/s; an open loop
offers `--overload-factor` (10) times that on a fixed schedule for `--overload-seconds` (30),
whatever the answers. LINKFLOW_MAX_QUEUED_PER_WORKSPACE is `--max-queued` (default: what the
workers finish in 30 s, capacity × 30): the excess must be refused with 429.

Throughout, a separate process polls each gateway's `/health` every 50 ms, and the harness
samples the task stream (XLEN, and its unread part) and matching's `linkflow_tasks_held`.
After the load it waits until every accepted execution closed (the drain), watches
`--watch-after-close` seconds more for late calls, then compares the calls the target recorded
with the attempts of the event log (`bench.eventlog`): a call that arrived after its attempt
ended or its execution closed is a call for an ended attempt (target: none). RSS per process
is read after the drain and again `--rss-idle` seconds later. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from bench.api import create_workflow, sign_up
from bench.eventlog import ExecutionLog, check_calls
from bench.load import Starter, ms, open_loop, pct
from bench.procs import ProcessProbe, progress
from bench.scenario import (
    HealthProbe,
    QueueSampler,
    Reads,
    commit_of,
    health_figures,
    measure_on_stack,
    metric_sum,
    reset_calls,
    target_calls,
)
from bench.stack import Layout, Stack, bench_settings

TIMEOUT_S = 10
MAX_ATTEMPTS = 3


def definition(target: str, slow_s: float) -> dict[str, Any]:
    url = f"{target}/call/{{{{ execution.id }}}}/call?sleep={slow_s}"
    node = {
        "id": "call",
        "type": "http_request",
        "timeout_s": TIMEOUT_S,
        "retry": {"max_attempts": MAX_ATTEMPTS},
        "config": {"url": url},
    }
    return {"name": "overload", "nodes": [node]}


def plan(args: argparse.Namespace) -> dict[str, Any]:
    workers = args.workers or 1
    capacity = args.worker_concurrency * workers / args.slow_s
    rate = args.overload_rate or args.overload_factor * capacity
    cap = args.max_queued if args.max_queued is not None else round(capacity * 30)
    return {
        "capacity_per_s": round(capacity, 1),
        "offered_per_s": round(rate, 1),
        "max_queued_per_workspace": cap,
        "worker_concurrency": args.worker_concurrency,
        "slow_s": args.slow_s,
        "duration_s": args.overload_seconds,
        "timeout_s": TIMEOUT_S,
        "max_attempts": MAX_ATTEMPTS,
    }


async def run(args: argparse.Namespace, session: aiohttp.ClientSession, target: str) -> dict:
    settings_of_run = plan(args)
    env = {
        "LINKFLOW_WORKER_CONCURRENCY": str(args.worker_concurrency),
        "LINKFLOW_MAX_QUEUED_PER_WORKSPACE": str(settings_of_run["max_queued_per_workspace"]),
        **args.stack_env,
    }
    layout = Layout("split", gateways=args.gateways, workers=args.workers or 1)
    stack = Stack(bench_settings(), layout, env, args.code_root)
    line: dict[str, Any] = {
        "bench": "overload",
        "system": "linkflow",
        "commit": commit_of(args.code_root),
        "layout": layout.describe(),
        "env": args.stack_env,
    }
    logs = args.logs / "overload" if args.logs else None
    return line | await measure_on_stack(
        stack,
        session,
        logs,
        lambda probe, reads: _measure(args, session, target, stack, probe, reads, settings_of_run),
    )


async def _measure(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    target: str,
    stack: Stack,
    probe: ProcessProbe,
    reads: Reads,
    run_settings: dict[str, Any],
) -> dict[str, Any]:
    api = f"{stack.gateways[0]}/api/v1"
    ws, headers = await sign_up(session, api)
    wf = await create_workflow(session, api, ws, headers, definition(target, args.slow_s))
    urls = [f"{g}/api/v1/workspaces/{ws}/workflows/{wf}/executions" for g in stack.gateways]
    await reset_calls(session, target)
    health = HealthProbe(stack.gateways)
    health.start()
    sampler = QueueSampler(stack, session)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    await asyncio.sleep(1.0)  # the probe's first answers: the idle baseline is in the figures
    probe.reset()
    rate, seconds = run_settings["offered_per_s"], run_settings["duration_s"]
    progress(
        f"overload: offering {rate}/s for {seconds}s (capacity {run_settings['capacity_per_s']}/s,"
        f" cap {run_settings['max_queued_per_workspace']} open)"
    )
    starter = Starter(session, urls, headers)
    arrivals, late_ms = await open_loop(starter, rate, 0.0, seconds)
    load_end = time.monotonic()
    cpu_load = probe.cpu_pct()
    accepted = [a for a in arrivals if a.execution_id]
    progress(
        f"overload: {len(accepted)} accepted of {len(arrivals)}, refusals {dict(starter.errors)};"
        " draining"
    )
    left = await reads.wait_closed([ws], args.drain_timeout)
    drain_s = time.monotonic() - load_end
    progress(f"overload: drained in {drain_s:.1f}s ({left} still open); watching late calls")
    await asyncio.sleep(args.watch_after_close)
    rss_after_drain = probe.current_rss_mb()
    worker_ops = [stack.ops[n] for n, _ in stack.layout.processes() if n.startswith("worker")]
    skipped = [
        await metric_sum(session, base, "linkflow_tasks_skipped_total") for base in worker_ops
    ]
    stop_sampling.set()
    await sampling
    health_samples = health.stop()
    stream_at_end = dict(sampler.last)
    if args.rss_idle > 0:
        progress(f"overload: RSS again in {args.rss_idle:.0f}s")
        await asyncio.sleep(args.rss_idle)
    rss_idle = probe.current_rss_mb() if args.rss_idle > 0 else None

    statuses = await reads.statuses(ws)
    log = await ExecutionLog.read(reads.conn)
    calls = await target_calls(session, target)
    call_check = check_calls(log, calls).summary()
    accepted_ids = {a.execution_id for a in accepted if a.execution_id}
    closing = log.closing_check(accepted_ids)
    refused = starter.errors.get("429", 0)
    other_errors = {k: v for k, v in starter.errors.items() if k != "429"}
    completed = statuses.get("completed", 0)
    n_accepted = len(accepted_ids)
    completed_pct = round(100 * completed / n_accepted, 2) if n_accepted else None
    api_ms = [a.api_ms for a in arrivals]
    figures: dict[str, Any] = {
        "offered": len(arrivals),
        "accepted": n_accepted,
        "refused_429": refused,
        "other_errors": other_errors,
        "accepted_per_s": round(n_accepted / seconds, 1),
        "completed": completed,
        "failed": statuses.get("failed", 0),
        "other": sum(v for k, v in statuses.items() if k not in ("completed", "failed")),
        "completed_pct": completed_pct,
        "read_model_executions": sum(statuses.values()),
        "closed_once": closing["closed_once"],
        "not_closed": closing["not_closed"],
        "closed_more_than_once": closing["closed_more_than_once"],
        "node_outcomes": await reads.node_outcomes(ws),
        "attempt_endings": log.attempt_endings(),
        **call_check,
        "tasks_skipped": sum(s for s in skipped if s is not None),
        **health_figures(health_samples),
        **sampler.figures(),
        "task_stream_at_end": stream_at_end.get("stream"),
        "drain_s": round(drain_s, 1),
        "left_open_after_drain": left,
        "api_start_p50_ms": ms(pct(api_ms, 0.50)),
        "api_start_p99_ms": ms(pct(api_ms, 0.99)),
        "client_late_max_ms": round(late_ms, 1),
        "rss_mb": probe.rss_mb(),
        "rss_mb_after_drain": rss_after_drain,
        "rss_mb_idle": rss_idle,
        "rss_idle_s": args.rss_idle,
        "cpu_pct_during_load": cpu_load,
        **run_settings,
        "watch_after_close_s": args.watch_after_close,
    }
    figures["targets"] = {
        "completed_pct>=99": completed_pct is not None and completed_pct >= 99,
        "excess_refused_429": refused > 0 and not other_errors,
        "calls_for_ended_attempts==0": call_check["calls_for_ended_attempts"] == 0,
        "health_p99<=100ms": (figures["health_p99_ms"] or 0) <= 100,
        "rss<=128MB": all(v <= 128 for v in (rss_idle or rss_after_drain).values()),
    }
    return figures
