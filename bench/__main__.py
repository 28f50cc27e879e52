"""`python -m bench` (or `make bench BENCH_ARGS='…'`): throughput and latency of LinkFlow, side
by side with DBOS Transact on the same PostgreSQL.

For each shape (`pure-3`: transform → condition → transform; `http-3`: three http_request nodes
against a local target server) and each system, every run is a closed-loop run (`--concurrency`
clients start executions over HTTP back to back; completions per second over `--duration` after
a warm-up, counted from the system's records) then an open-loop run at half that rate (fixed
arrival schedule; start→close latency from the client's send to the close time the system
recorded). One JSON line per shape and system (medians of `--runs` runs) and one per shape with
the ratio to DBOS go to stdout; progress goes to stderr. `--gateway-only` measures
`POST …/executions` alone on one gateway process. Everything runs on a database and Redis prefix
of its own, removed at the end (also on Ctrl-C).

Opt-in, by name in `--shapes`: the fault shapes of issue 12, each on a stack of its own in the
`split` layout and printing one JSON line — `overload` (`bench.overload`: a slow target offered
10× what the workers can do), `noisy` (`bench.noisy`: one workspace's flood against another's
latency) and `chaos` (`bench.chaos`: kills, a Redis restart and a PostgreSQL cut; the exit status
is 1 when one of its checks fails). Also opt-in: `visibility` (`bench.visibility`: the
analysts' queries, export and live streams over 1,000,000 bulk-loaded executions), and the
auditors' `audit-log` (`bench.audit_log`: pages of the event log over `--audit-events` events)
and `audit-verify` (`bench.audit_verify`: `linkflow audit verify` and `verify-export`).
`--code-root` runs another checkout's code with this harness.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench import audit_log, audit_verify, chaos, noisy, overload, report, visibility
from bench.api import create_workflow, sign_up
from bench.load import (
    ConsumerLag,
    Starter,
    close_times,
    closed_loop,
    drain,
    ms,
    open_loop,
    pct,
    request_loop,
)
from bench.procs import REPO, Child, ProcessProbe, free_port, progress, python_module
from bench.records import DbosRecords, LinkFlowRecords, Records
from bench.shapes import SHAPES, definition
from bench.stack import Layout, Stack, bench_settings
from infra.schema import create_database, drop_database

FAULT_SHAPES = ("overload", "noisy", "chaos", "visibility", "audit-log", "audit-verify")
NOISY_SHAPES = noisy.SHAPES
FaultRunner = Callable[[argparse.Namespace, aiohttp.ClientSession, str], Awaitable[dict[str, Any]]]
FAULT_RUNNERS: dict[str, FaultRunner] = {
    "overload": overload.run,
    "noisy": noisy.run,
    "chaos": chaos.run,
    "visibility": visibility.run,
    "audit-log": lambda args, session, target: audit_log.run(
        argparse.Namespace(events=args.audit_events, repeats=args.audit_repeats, limit=1000)
    ),
    "audit-verify": lambda args, session, target: asyncio.to_thread(
        audit_verify.measure, args.audit_events, 10
    ),
}


def warmup_of(args: argparse.Namespace) -> float:
    return float(max(1.0, min(10.0, args.duration * 0.2)))


async def one_run(
    args: argparse.Namespace,
    starter: Starter,
    records: Records,
    lag_records: LinkFlowRecords | None,
    probe: ProcessProbe | None = None,
) -> dict[str, Any]:
    """One closed-loop run, then one open-loop run at half its rate."""
    warmup = warmup_of(args)
    lag = ConsumerLag(lag_records) if lag_records else None
    stop_lag = asyncio.Event()
    lag_task = asyncio.create_task(lag.run(stop_lag)) if lag else None
    try:
        closed = await closed_loop(
            starter, records, args.concurrency, warmup, args.duration, args.max_backlog
        )
    finally:
        stop_lag.set()
        if lag_task:
            await lag_task
    # Each process's RSS as the full load ends (the maximum over the run is `rss_mb`).
    rss_full_load = probe.current_rss_mb() if probe else None
    left = await drain(records, args.drain_timeout)
    progress(f"  closed loop: {closed.executions_per_s}/s (starts {closed.started_per_s}/s)")
    rate = max(closed.executions_per_s / 2, 1.0)
    arrivals, late_ms = await open_loop(starter, rate, warmup, args.duration)
    ids = [a.execution_id for a in arrivals if a.execution_id]
    closes = await close_times(records, ids, args.drain_timeout)
    left += await drain(records, args.drain_timeout)
    measured = [a for a in arrivals if a.measured]
    latencies = [
        (closes[a.execution_id][1] - a.sent_at) * 1000 for a in measured if a.execution_id in closes
    ]
    run = {
        "executions_per_s": closed.executions_per_s,
        "started_per_s": closed.started_per_s,
        "open_loop_rate": round(rate, 1),
        "open_loop_sent": len(measured),
        "p50_ms": ms(pct(latencies, 0.50)),
        "p95_ms": ms(pct(latencies, 0.95)),
        "p99_ms": ms(pct(latencies, 0.99)),
        "api_start_p50_ms": ms(pct([a.api_ms for a in measured], 0.50)),
        "api_start_p95_ms": ms(pct([a.api_ms for a in measured], 0.95)),
        "projection_lag_p95_ms": ms(pct(lag.lags_ms(*closed.window), 0.95)) if lag else None,
        "audit_chain_lag_p95_ms": (
            ms(pct(lag.lags_ms(*closed.window, consumer="audit"), 0.95)) if lag else None
        ),
        "audit_checkpoint_lag_p95_ms": (
            ms(pct(lag.lags_ms(*closed.window, consumer="audit_checkpoints"), 0.95))
            if lag
            else None
        ),
        "failed": sum(1 for ok, _ in closes.values() if not ok),
        "unclosed": len(ids) - len(closes),
        "start_errors": dict(starter.errors),
        "left_open_after_drain": left,
        "client_late_max_ms": round(late_ms, 1),
        "rss_mb_full_load": rss_full_load,
    }
    starter.errors.clear()
    progress(
        f"  open loop at {run['open_loop_rate']}/s: p50 {run['p50_ms']} ms,"
        f" p95 {run['p95_ms']} ms, api p95 {run['api_start_p95_ms']} ms"
    )
    return run


async def bench_shape(
    args: argparse.Namespace,
    system: str,
    shape: str,
    starter: Starter,
    records: Records,
    lag_records: LinkFlowRecords | None,
    layout: dict[str, Any],
    probe: ProcessProbe,
) -> dict[str, Any]:
    probe.reset()
    runs = []
    for i in range(args.runs):
        progress(f"{system} {shape} run {i + 1}/{args.runs}")
        runs.append(await one_run(args, starter, records, lag_records, probe))
    rss_max, cpu = probe.rss_mb(), probe.cpu_pct()  # over the runs, not the idle time below
    if args.rss_idle > 0:
        # Steady state after the load: each process hands free heap pages back (malloc_trim
        # every 10 s), so the RSS should fall back from its peak.
        progress(f"  RSS again in {args.rss_idle:.0f}s")
        await asyncio.sleep(args.rss_idle)
    rss_idle = probe.current_rss_mb() if args.rss_idle > 0 else None
    settings = {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": warmup_of(args),
        "max_backlog": args.max_backlog,
    }
    line = report.summary(shape, system, layout, runs, rss_max, cpu, settings)
    full = [run["rss_mb_full_load"] for run in runs if run.get("rss_mb_full_load")]
    line["rss_mb_full_load"] = (
        {n: max(f.get(n, 0) for f in full) for n in full[0]} if full else None
    )
    line["rss_mb_idle"] = rss_idle
    line["rss_idle_s"] = args.rss_idle
    report.emit(line)
    return line


def layout_of(args: argparse.Namespace) -> Layout:
    if args.gateway_only:
        return Layout("gateway", gateways=1)
    if args.layout == "all":
        return Layout("all", workers=args.workers or 0)
    return Layout("split", gateways=args.gateways, workers=args.workers or 1)


async def bench_linkflow(
    args: argparse.Namespace, session: aiohttp.ClientSession, target: Child, target_url: str
) -> dict[str, dict[str, Any]]:
    stack = Stack(bench_settings(), layout_of(args), args.stack_env, args.code_root)
    lines: dict[str, dict[str, Any]] = {}
    stop_probe = asyncio.Event()
    try:
        await stack.start(session)
        probe = ProcessProbe(stack.pids() | {"client": os.getpid(), "target": target.pid})
        probe_task = asyncio.create_task(probe.run(stop_probe))
        records = await LinkFlowRecords.connect(stack.settings.conninfo)
        lag_records = await LinkFlowRecords.connect(stack.settings.conninfo)
        try:
            apis = [f"{g}/api/v1" for g in stack.gateways]
            ws, headers = await sign_up(session, apis[0])
            records.workspace_id = ws
            for shape in args.shapes:
                wf = await create_workflow(
                    session, apis[0], ws, headers, definition(shape, target_url)
                )
                urls = [f"{api}/workspaces/{ws}/workflows/{wf}/executions" for api in apis]
                starter = Starter(session, urls, headers)
                if args.gateway_only:
                    await bench_gateway(args, starter, stack, probe)
                    continue
                lines[shape] = await bench_shape(
                    args,
                    "linkflow",
                    shape,
                    starter,
                    records,
                    lag_records,
                    stack.layout.describe(),
                    probe,
                )
        finally:
            stop_probe.set()
            await probe_task
            await records.close()
            await lag_records.close()
    finally:
        errors = stack.stop()
        await stack.forget()
        if errors:
            progress(f"the stack logged {len(errors)} error lines; first ones:")
            for line in errors[:10]:
                progress(f"  {line}")
    return lines


async def bench_gateway(
    args: argparse.Namespace, starter: Starter, stack: Stack, probe: ProcessProbe
) -> None:
    probe.reset()
    warmup = warmup_of(args)
    progress(f"gateway only: {args.gateway_concurrency} clients, {warmup}+{args.duration}s")
    rate, latencies = await request_loop(starter, args.gateway_concurrency, warmup, args.duration)
    report.emit(
        {
            "bench": "gateway-only",
            "system": "linkflow",
            "layout": stack.layout.describe(),
            "requests_per_s": round(rate, 1),
            "p50_ms": ms(pct(latencies, 0.50)),
            "p95_ms": ms(pct(latencies, 0.95)),
            "p99_ms": ms(pct(latencies, 0.99)),
            "start_errors": dict(starter.errors),
            "rss_mb": probe.rss_mb(),
            "cpu_pct": probe.cpu_pct(),
            "concurrency": args.gateway_concurrency,
            "duration_s": args.duration,
        }
    )


async def bench_dbos(
    args: argparse.Namespace, session: aiohttp.ClientSession, target: Child, target_url: str
) -> dict[str, dict[str, Any]]:
    settings = bench_settings().model_copy(
        update={"pg_db": f"lf_bench_dbos_{uuid.uuid4().hex[:8]}"}
    )
    create_database(settings)
    port = free_port()
    url = (
        f"postgresql://{settings.pg_user}:{settings.pg_password}@{settings.pg_host}:"
        f"{settings.pg_port}/{settings.pg_db}"
    )
    argv = python_module(
        "bench.dbos_peer", "--port", str(port), "--database-url", url, "--target", target_url
    )
    peer = Child("dbos", argv, dict(os.environ), f"http://127.0.0.1:{port}/ready")
    lines: dict[str, dict[str, Any]] = {}
    stop_probe = asyncio.Event()
    try:
        peer.start()
        await peer.wait_ready(session)
        progress("dbos peer up")
        probe = ProcessProbe({"dbos": peer.pid, "client": os.getpid(), "target": target.pid})
        probe_task = asyncio.create_task(probe.run(stop_probe))
        records = await DbosRecords.connect(settings.conninfo)
        try:
            for shape in args.shapes:
                starter = Starter(session, [f"http://127.0.0.1:{port}/start/{shape}"], {})
                layout = {"name": "dbos", "processes": ["dbos"]}
                lines[shape] = await bench_shape(
                    args, "dbos", shape, starter, records, None, layout, probe
                )
        finally:
            stop_probe.set()
            await probe_task
            await records.close()
    finally:
        peer.stop()
        for line in peer.error_lines()[:10]:
            progress(f"dbos: {line[:300]}")
        drop_database(settings)
    return lines


async def bench(args: argparse.Namespace) -> int:
    """Every shape asked for; the exit status (1 when a check of the `chaos` shape failed)."""
    status = 0
    port = free_port()
    target = Child(
        "target",
        python_module("bench.target", str(port)),
        dict(os.environ),
        f"http://127.0.0.1:{port}/ready",
    )
    target_url = f"http://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            target.start()
            await target.wait_ready(session)
            if args.shapes:
                ours = await bench_linkflow(args, session, target, target_url)
                if args.peer == "dbos" and not args.gateway_only:
                    theirs = await bench_dbos(args, session, target, target_url)
                    for shape in args.shapes:
                        report.emit(report.ratio(shape, ours[shape], theirs[shape]))
            for fault in args.faults:
                line = await FAULT_RUNNERS[fault](args, session, target_url)
                report.emit(line)
                if line.get("checks_passed") is False:
                    status = 1
        finally:
            target.stop()
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated shapes: {', '.join(SHAPES)}; opt-in: {', '.join(FAULT_SHAPES)}",
    )
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 60)")
    parser.add_argument("--runs", type=int, help="runs per shape and system (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke: duration 5, runs 1")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument("--max-backlog", type=int, default=256, help="open executions cap")
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--connections", type=int, default=256, help="client connection pool")
    parser.add_argument("--peer", choices=("none", "dbos"), help="default: dbos if importable")
    parser.add_argument("--layout", choices=("all", "split"), default="all")
    parser.add_argument("--gateways", type=int, default=1, help="gateway processes (split)")
    parser.add_argument("--workers", type=int, help="worker processes (split: 1; all: extra 0)")
    parser.add_argument("--gateway-only", action="store_true", help="POST …/executions alone")
    parser.add_argument("--gateway-concurrency", type=int, default=64)
    parser.add_argument(
        "--rss-idle",
        type=float,
        help="seconds after a shape's load ends to read each process's RSS again"
        " (default 30; --quick: 0, not read)",
    )
    parser.add_argument(
        "--code-root",
        type=Path,
        default=REPO,
        help="the LinkFlow checkout whose code the stack runs (default: this one)",
    )
    parser.add_argument("--logs", type=Path, help="keep the fault shapes' process logs here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="LINKFLOW_NAME=VALUE",
        help="a setting for every LinkFlow process of the run (repeatable; for experiments)",
    )
    faults = parser.add_argument_group("fault shapes (overload, noisy, chaos)")
    faults.add_argument("--slow-s", type=float, default=1.0, help="overload: target seconds")
    faults.add_argument("--worker-concurrency", type=int, default=64, help="overload: per worker")
    faults.add_argument("--overload-factor", type=float, default=10.0, help="× capacity offered")
    faults.add_argument("--overload-rate", type=float, help="starts/s offered (overrides factor)")
    faults.add_argument("--overload-seconds", type=float, default=30.0, help="offered for")
    faults.add_argument(
        "--max-queued", type=int, help="overload: open executions cap (default capacity × 30 s)"
    )
    faults.add_argument("--watch-after-close", type=float, default=10.0, help="late-call watch")
    faults.add_argument("--noisy-flood", type=int, default=20_000, help="workspace A's starts")
    faults.add_argument("--noisy-concurrency", type=int, default=64, help="A's closed-loop clients")
    faults.add_argument("--noisy-executions", type=int, default=200, help="workspace B's")
    faults.add_argument("--noisy-rate", type=float, default=10.0, help="B's starts per second")
    faults.add_argument("--noisy-shape", choices=NOISY_SHAPES, default="http-3")
    faults.add_argument(
        "--noisy-backlog", type=int, default=2000, help="A's open executions before B starts"
    )
    faults.add_argument("--chaos-executions", type=int, default=10_000)
    faults.add_argument("--chaos-rate", type=float, default=100.0, help="starts per second")
    faults.add_argument("--chaos-kill-every", type=float, default=5.0, help="seconds")
    faults.add_argument("--chaos-pg-cut", type=float, default=10.0, help="seconds")
    faults.add_argument("--chaos-claim-idle-ms", type=int, help="LINKFLOW_TASK_CLAIM_IDLE_MS")
    faults.add_argument("--seed", type=int, help="chaos: the kill sequence's random seed")
    shown = parser.add_argument_group("the visibility shape")
    shown.add_argument("--visibility-rows", type=int, default=1_000_000, help="executions loaded")
    shown.add_argument("--visibility-repeats", type=int, default=200, help="times each query")
    audit = parser.add_argument_group("the audit-log and audit-verify shapes")
    audit.add_argument("--audit-events", type=int, default=1_000_000, help="events loaded")
    audit.add_argument("--audit-repeats", type=int, default=200, help="pages asked (audit-log)")
    args = parser.parse_args(argv)
    requested = [s for s in args.shapes.split(",") if s]
    unknown = set(requested) - set(SHAPES) - set(FAULT_SHAPES)
    if unknown:
        known = ", ".join(SHAPES + FAULT_SHAPES)
        parser.error(f"unknown shapes {sorted(unknown)}; known: {known}")
    args.shapes = [s for s in requested if s in SHAPES]
    args.faults = [s for s in requested if s in FAULT_SHAPES]
    if args.rss_idle is None:
        args.rss_idle = 0.0 if args.quick else 30.0
    args.code_root = args.code_root.resolve()
    args.stack_env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("LINKFLOW_"):
            parser.error(f"--env takes LINKFLOW_NAME=VALUE, not {item!r}")
        args.stack_env[name] = value
    if args.duration is None:
        args.duration = 5.0 if args.quick else 60.0
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.gateway_only:
        args.shapes = ["pure-3"]
    if args.peer is None:
        args.peer = "dbos" if importlib.util.find_spec("dbos") else "none"
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    # SIGTERM (a `kill`, a CI timeout) cleans up like Ctrl-C: processes, database, Redis keys.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    status = 1
    try:
        status = asyncio.run(bench(args))
    except KeyboardInterrupt:
        progress("interrupted: cleaned up")
    progress(f"done in {time.monotonic() - started:.0f}s")
    sys.exit(status)


if __name__ == "__main__":
    main()
