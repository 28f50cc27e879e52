"""The `chaos` shape (issue 12): executions keep closing exactly once while processes die.

Layout `split`, on a `redis-server` of its own (`bench.scenario.RedisServer`) and behind a
PostgreSQL proxy (`bench.pgproxy`): the stack's processes reach PostgreSQL through the proxy,
the harness reads it directly. Two workflows in one workspace: `pure-3`, and `http-3` whose
nodes call `GET /call/{execution id}/h{i}` on the target, which records every call.

`--chaos-executions` (10,000) starts, alternately of each workflow, go out at `--chaos-rate`
(100/s) on a fixed schedule; each start carries an Idempotency-Key and is sent again (same key,
after Retry-After or 0.5 s) until it is answered with 202, for at most 120 s: a start whose
answer was lost (a gateway killed mid-request) is answered by the retry. Meanwhile a driver
kill -9s a random role process every `--chaos-kill-every` (5) seconds and starts it again at
once, restarts Redis once (at 30 % of the load: stopped, started empty on the same port) and
cuts PostgreSQL once (at 60 %: every connection reset, connections refused for `--chaos-pg-cut`
(10) seconds).

Then it waits until every execution closed, stops the stack and checks, from the event log:
every execution the client was answered for (and every one the log started) has exactly one
closing event; none is left open; no start was given up; and the read models equal a rebuild
(`linkflow rebuild-read-models`, compared table by table as tests/e2e/test_faults.py does).
It prints the outbound calls repeated beyond one per (execution, node, attempt), the calls for
attempts that had ended, and the kills and restarts done. One JSON line; the harness exits 1
when a check fails (`checks_passed`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import psycopg

from bench.api import create_workflow, sign_up, start_once
from bench.eventlog import ExecutionLog, check_calls
from bench.procs import Child, free_port, progress, python_module
from bench.scenario import (
    Reads,
    RedisServer,
    commit_of,
    reset_calls,
    stack_errors,
    target_calls,
)
from bench.shapes import PURE_3, http_recorded
from bench.stack import Layout, Stack, bench_settings
from projections.visibility import READ_MODEL_TABLES

START_DEADLINE_S = 120.0
REDIS_AT, PG_AT = 0.3, 0.6  # of the load's planned length


class Load:
    """Starts on a fixed schedule, each retried with its Idempotency-Key until answered."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[list[str]],  # per workflow, one URL per gateway
        headers: dict[str, str],
        tag: str,
    ) -> None:
        self.session, self.urls, self.headers, self.tag = session, urls, headers, tag
        self.accepted: dict[int, str] = {}
        self.retries: Counter[str] = Counter()
        self.given_up = 0

    async def one(self, i: int) -> None:
        urls = self.urls[i % len(self.urls)]
        deadline = time.monotonic() + START_DEADLINE_S
        tries = 0
        while True:
            url = urls[(i + tries) % len(urls)]
            key = f"{self.tag}-{i}"
            out = await start_once(self.session, url, self.headers, {"input": {"n": i}}, key)
            if out.execution_id:
                self.accepted[i] = out.execution_id
                return
            self.retries[str(out.status or out.error)] += 1
            tries += 1
            if time.monotonic() > deadline:
                self.given_up += 1
                return
            await asyncio.sleep(min(out.retry_after_s or 0.5, 2.0))

    async def run(self, total: int, rate: float) -> None:
        begin = time.monotonic()
        tasks = []
        for i in range(total):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(i)))
        await asyncio.gather(*tasks)


class Driver:
    """kill -9 a random role every `every_s`, Redis restarted once, PostgreSQL cut once."""

    def __init__(
        self,
        stack: Stack,
        redis: RedisServer,
        proxy_control: str,
        session: aiohttp.ClientSession,
        args: argparse.Namespace,
        load_s: float,
    ) -> None:
        self.stack, self.redis, self.proxy_control = stack, redis, proxy_control
        self.session, self.args, self.load_s = session, args, load_s
        self.rng = random.Random(args.seed)
        self.kills: Counter[str] = Counter()
        self.events: list[tuple[float, str]] = []
        self.pg_cuts = 0

    async def run(self, load_done: asyncio.Event) -> None:
        begin = time.monotonic()
        next_kill = begin + self.args.chaos_kill_every
        redis_due, pg_due = begin + self.load_s * REDIS_AT, begin + self.load_s * PG_AT
        redis_done = pg_done = False
        names = [child.name for child in self.stack.children]
        while not (load_done.is_set() and redis_done and pg_done):
            now = time.monotonic()
            if not redis_done and now >= redis_due:
                await self.redis.restart()
                redis_done = True
                self._note(begin, "redis restarted")
            if not pg_done and now >= pg_due:
                seconds = self.args.chaos_pg_cut
                async with self.session.post(f"{self.proxy_control}/cut?seconds={seconds}") as r:
                    closed = (await r.json())["closed"]
                self.pg_cuts += 1
                pg_done = True
                self._note(begin, f"postgres cut for {seconds}s ({closed} connections reset)")
            if not load_done.is_set() and now >= next_kill:
                name = self.rng.choice(names)
                child = self.stack.child(name)
                child.kill()
                child.start()
                self.kills[name] += 1
                next_kill += self.args.chaos_kill_every
                self._note(begin, f"kill -9 {name}, started again")
            await asyncio.sleep(0.05)

    def _note(self, begin: float, what: str) -> None:
        self.events.append((round(time.monotonic() - begin, 1), what))
        progress(f"chaos: {what}")


async def snapshot(conninfo: str) -> dict[str, Counter[str]]:
    """Every row of every read-model table, as comparable text."""
    out: dict[str, Counter[str]] = {}
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for table in READ_MODEL_TABLES:
            cur = await conn.execute(f"SELECT * FROM {table}")  # noqa: S608
            cols = [c.name for c in cur.description or ()]
            out[table] = Counter(
                json.dumps(dict(zip(cols, row, strict=True)), default=str, sort_keys=True)
                for row in await cur.fetchall()
            )
    return out


async def rebuild_and_compare(stack: Stack, code_root: Any) -> dict[str, Any]:
    """Snapshot the live read models, rebuild them from the log, snapshot again (the stack is
    stopped); the rows that differ per table."""
    before = await snapshot(stack.settings.conninfo)
    env = {**stack.env, "LINKFLOW_PG_PORT": str(stack.settings.pg_port)}  # not the proxy
    argv = [sys.executable, "-m", "gateways.cli", "rebuild-read-models"]
    rebuild = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=code_root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await rebuild.communicate()
    after = await snapshot(stack.settings.conninfo)
    diffs = {
        table: sum(((before[table] - after[table]) + (after[table] - before[table])).values())
        for table in READ_MODEL_TABLES
    }
    return {
        "rebuild_exit": rebuild.returncode,
        "rebuild_output": output.decode(errors="replace").strip()[-300:],
        "read_model_rows": {t: sum(before[t].values()) for t in READ_MODEL_TABLES},
        "read_model_rows_differing": {t: n for t, n in diffs.items() if n},
        "read_models_equal_rebuild": rebuild.returncode == 0 and not any(diffs.values()),
    }


async def run(args: argparse.Namespace, session: aiohttp.ClientSession, target: str) -> dict:
    redis = RedisServer()
    await redis.start()
    base = bench_settings()
    settings = base.model_copy(update={"redis_url": redis.url})
    listen, control = free_port(), free_port()
    proxy_argv = python_module(
        "bench.pgproxy", str(listen), str(control), settings.pg_host, str(settings.pg_port)
    )
    proxy = Child("pgproxy", proxy_argv, dict(os.environ), f"http://127.0.0.1:{control}/ready")
    env = {**args.stack_env, "LINKFLOW_PG_PORT": str(listen)}
    if args.chaos_claim_idle_ms:
        env["LINKFLOW_TASK_CLAIM_IDLE_MS"] = str(args.chaos_claim_idle_ms)
    layout = Layout("split", gateways=args.gateways, workers=args.workers or 1)
    stack = Stack(settings, layout, env, args.code_root)
    line: dict[str, Any] = {
        "bench": "chaos",
        "system": "linkflow",
        "commit": commit_of(args.code_root),
        "layout": layout.describe(),
        "env": args.stack_env,
    }
    try:
        proxy.start()
        await proxy.wait_ready(session)
        await stack.start(session)
        reads = await Reads.connect(settings.conninfo)
        try:
            line |= await _measure(args, session, target, stack, redis, control, reads)
        finally:
            await reads.close()
    finally:
        errors = stack_errors(stack, args.logs / "chaos" if args.logs else None)
        line["stack_error_lines"] = len(errors)
        await stack.forget()
        proxy.stop()
        redis.stop()
    return line


async def _measure(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    target: str,
    stack: Stack,
    redis: RedisServer,
    control_port: int,
    reads: Reads,
) -> dict[str, Any]:
    api = f"{stack.gateways[0]}/api/v1"
    ws, headers = await sign_up(session, api)
    workflows = [
        await create_workflow(session, api, ws, headers, PURE_3),
        await create_workflow(session, api, ws, headers, http_recorded(target, 3)),
    ]
    urls = [
        [f"{g}/api/v1/workspaces/{ws}/workflows/{wf}/executions" for g in stack.gateways]
        for wf in workflows
    ]
    await reset_calls(session, target)
    total, rate = args.chaos_executions, args.chaos_rate
    load_s = total / rate
    progress(
        f"chaos: {total} executions at {rate}/s (~{load_s:.0f}s), kill -9 every"
        f" {args.chaos_kill_every}s, Redis restart at {REDIS_AT:.0%}, PostgreSQL cut"
        f" ({args.chaos_pg_cut}s) at {PG_AT:.0%}"
    )
    load = Load(session, urls, headers, f"chaos-{time.time_ns()}")
    driver = Driver(stack, redis, f"http://127.0.0.1:{control_port}", session, args, load_s)
    load_done = asyncio.Event()
    driving = asyncio.create_task(driver.run(load_done))
    began, load_began_wall = time.monotonic(), time.time()
    try:
        await load.run(total, rate)
    finally:
        load_done.set()
        await driving
    load_took = time.monotonic() - began
    progress(f"chaos: {len(load.accepted)} accepted in {load_took:.0f}s; draining")
    exited: dict[str, str] = {}
    for child in stack.children:  # every process up again before the drain is judged
        try:
            await child.wait_ready(session)
        except RuntimeError as exc:  # it died by itself (not a kill of the driver's)
            exited[child.name] = str(exc)[-500:]
            progress(f"chaos: {child.name} was not up: {exc}; starting it again")
            child.start()
            await child.wait_ready(session)
    left = await reads.wait_closed([ws], args.drain_timeout)
    drain_s = time.monotonic() - began - load_took
    progress(f"chaos: drained in {drain_s:.0f}s ({left} open); checking")
    statuses = await reads.statuses(ws)
    node_outcomes = await reads.node_outcomes(ws)
    stack.stop()
    log = await ExecutionLog.read(reads.conn)
    accepted = set(load.accepted.values())
    closing = log.closing_check(accepted | log.started)
    call_check = check_calls(log, await target_calls(session, target))
    calls = call_check.summary()
    # When the repeats arrived, in seconds since the load began (to set against fault_times_s).
    calls["repeated_call_times_s"] = sorted(
        round(t - load_began_wall, 1) for t in call_check.repeated_at
    )[:50]
    rebuilt = await rebuild_and_compare(stack, args.code_root)
    checks = {
        "every_execution_closed_once": closing["closed_once"] == closing["executions"],
        "none_left_open": closing["not_closed"] == 0,
        "no_start_given_up": load.given_up == 0,
        "no_process_exited_by_itself": not exited,
        "read_models_equal_rebuild": rebuilt["read_models_equal_rebuild"],
    }
    return {
        "executions": total,
        "accepted": len(accepted),
        "starts_given_up": load.given_up,
        "start_retries": dict(load.retries),
        **closing,
        "statuses": dict(statuses),
        "node_outcomes": node_outcomes,
        "attempt_endings": log.attempt_endings(),
        **calls,
        **rebuilt,
        "kills": dict(driver.kills),
        "kills_total": sum(driver.kills.values()),
        "redis_restarts": redis.restarts,
        "pg_cuts": driver.pg_cuts,
        "fault_times_s": driver.events,
        "exited_by_themselves": exited,
        "load_s": round(load_took, 1),
        "drain_s": round(drain_s, 1),
        "rate": rate,
        "kill_every_s": args.chaos_kill_every,
        "pg_cut_s": args.chaos_pg_cut,
        "seed": args.seed,
        "checks": checks,
        "checks_passed": all(checks.values()),
    }
