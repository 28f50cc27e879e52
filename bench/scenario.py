"""Pieces the fault shapes (`overload`, `noisy`, `chaos`) share: a Redis server of their own,
the gateway health probe process, a sampler of the task stream and of matching's held tasks,
Prometheus scraping, the target's call record, and reads of the read model by workspace.
Imported by `bench.overload`, `bench.noisy` and `bench.chaos`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.load import ms, pct
from bench.procs import Child, ProcessProbe, free_port, progress, python_module
from bench.stack import Stack
from infra.streams import redis_client


def commit_of(root: Path) -> str | None:
    """The short commit the checkout at `root` is on (None outside git)."""
    done = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


class RedisServer:
    """A `redis-server` of this run's own on a free port, keeping nothing on disk (as the
    machine's Redis is used by others, the shapes that restart Redis restart this one)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the chaos shape needs the redis-server binary")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lf-bench-redis-")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.dir]
        self.child = Child("redis", argv, {})
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.child.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.child.tail()}") from None
                await asyncio.sleep(0.05)

    async def restart(self) -> None:
        """Stop it (everything it held is gone: it keeps nothing on disk) and start it again on
        the same port, empty."""
        self.child.kill()
        self.restarts += 1
        await self.start()

    def stop(self) -> None:
        self.child.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class HealthProbe:
    """`bench.healthprobe` in its own process, polling each gateway's `/health`."""

    def __init__(self, gateways: list[str], interval_s: float = 0.05) -> None:
        urls = [f"{g}/health" for g in gateways]
        argv = python_module("bench.healthprobe", str(interval_s), *urls)
        self.child = Child("healthprobe", argv, dict(os.environ))

    def start(self) -> None:
        self.child.start()

    def stop(self) -> list[tuple[float, float, int]]:
        """Stop it; every sample of every gateway."""
        self.child.stop()
        self.child.log.seek(0)
        samples: list[tuple[float, float, int]] = []
        for line in self.child.log.read().decode(errors="replace").splitlines():
            if line.startswith("{"):
                for per_url in json.loads(line).values():
                    samples += [tuple(s) for s in per_url]
        return samples


def health_figures(samples: list[tuple[float, float, int]]) -> dict[str, Any]:
    latencies = [s[1] for s in samples]
    return {
        "health_samples": len(samples),
        "health_not_ok": sum(1 for s in samples if s[2] != 200),
        "health_p50_ms": ms(pct(latencies, 0.50)),
        "health_p99_ms": ms(pct(latencies, 0.99)),
        "health_max_ms": ms(max(latencies)) if latencies else None,
    }


async def metric_sum(session: aiohttp.ClientSession, base: str, name: str) -> float | None:
    """The sum of a Prometheus metric's samples at `base`/metrics (None: no answer)."""
    try:
        async with session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class QueueSampler:
    """Every `interval_s`: the task stream's length (XLEN: entries not yet acknowledged, since
    workers delete what they acknowledge), its unread part (XLEN minus the `workers` group's
    pending entries) and matching's `linkflow_tasks_held`; keeps the peaks."""

    def __init__(
        self, stack: Stack, session: aiohttp.ClientSession, queue: str = "default"
    ) -> None:
        self.stack = stack
        self.session = session
        self.stream = stack.settings.key(f"tasks:{queue}")
        matching = "matching" if "matching" in stack.ops else stack.children[0].name
        self.matching = stack.ops[matching]
        self.stream_peak = 0
        self.unread_peak = 0
        self.held_peak = 0.0
        self.last: dict[str, float] = {}

    async def run(self, stop: asyncio.Event, interval_s: float = 0.1) -> None:
        client = redis_client(self.stack.settings)
        tick = 0
        try:
            while not stop.is_set():
                await self.sample(client, held=tick % 3 == 0)
                tick += 1
                try:
                    await asyncio.wait_for(stop.wait(), timeout=interval_s)
                except TimeoutError:
                    pass
        finally:
            await client.aclose()

    async def sample(self, client: Any, held: bool = True) -> None:
        try:
            length = int(await client.xlen(self.stream))
            pending = 0
            for group in await client.xinfo_groups(self.stream):
                if group.get("name") in (b"workers", "workers"):
                    pending = int(group.get("pending") or 0)
            self.stream_peak = max(self.stream_peak, length)
            self.unread_peak = max(self.unread_peak, length - pending)
            self.last.update(stream=length, unread=length - pending)
        except Exception:  # no stream yet, or Redis away (chaos): the next sample tells
            pass
        if held:
            value = await metric_sum(self.session, self.matching, "linkflow_tasks_held")
            if value is not None:
                self.held_peak = max(self.held_peak, value)
                self.last["held"] = value

    def figures(self) -> dict[str, Any]:
        return {
            "task_stream_peak": self.stream_peak,
            "task_stream_unread_peak": self.unread_peak,
            "held_peak": int(self.held_peak),
        }


async def target_calls(session: aiohttp.ClientSession, target: str) -> list[tuple[str, str, float]]:
    async with session.get(f"{target}/calls") as resp:
        return [(e, n, float(t)) for e, n, t in await resp.json()]


async def reset_calls(session: aiohttp.ClientSession, target: str) -> None:
    async with session.post(f"{target}/calls/reset") as resp:
        assert resp.status == 200


class Reads:
    """The harness's own reads of the read model and the log (straight to PostgreSQL)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, conninfo: str) -> Reads:
        return cls(await psycopg.AsyncConnection.connect(conninfo, autocommit=True))

    async def close(self) -> None:
        await self.conn.close()

    async def head_and_projector(self) -> tuple[int, int]:
        cur = await self.conn.execute(
            "SELECT (SELECT max(notification_id) FROM linkflow_events),"
            " (SELECT position FROM consumer_positions WHERE consumer = 'projector')"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    async def open_count(self, workspace: str) -> int:
        cur = await self.conn.execute(
            "SELECT count(*) FROM rm_executions WHERE workspace_id = %s AND status = 'running'",
            (uuid.UUID(workspace),),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def statuses(self, workspace: str) -> Counter[str]:
        cur = await self.conn.execute(
            "SELECT status, count(*) FROM rm_executions WHERE workspace_id = %s GROUP BY 1",
            (uuid.UUID(workspace),),
        )
        return Counter({str(s): int(n) for s, n in await cur.fetchall()})

    async def node_outcomes(self, workspace: str) -> dict[str, int]:
        """Node runs by final status and error type (`failed:timeout`, `completed`)."""
        cur = await self.conn.execute(
            "SELECT status, error->>'type', count(*) FROM rm_node_runs WHERE workspace_id = %s"
            " GROUP BY 1, 2 ORDER BY 3 DESC",
            (uuid.UUID(workspace),),
        )
        return {(f"{s}:{t}" if t else str(s)): int(n) for s, t, n in await cur.fetchall()}

    async def close_times(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        cur = await self.conn.execute(
            "SELECT id, status, closed_at FROM rm_executions"
            " WHERE id = ANY(%s) AND closed_at IS NOT NULL",
            ([uuid.UUID(i) for i in ids],),
        )
        return {str(r[0]): (str(r[1]), r[2].timestamp()) for r in await cur.fetchall()}

    async def settle(self, timeout_s: float) -> bool:
        """Wait until the projector applied everything written so far; False past the time."""
        head, _ = await self.head_and_projector()
        deadline = time.monotonic() + timeout_s
        while (await self.head_and_projector())[1] < head:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def wait_closed(self, workspaces: list[str], timeout_s: float) -> int:
        """Wait until the workspaces have no open execution (after the projector caught up);
        how many were still open at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.settle(max(deadline - time.monotonic(), 1.0))
            left = sum([await self.open_count(ws) for ws in workspaces])
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.25)


def stack_errors(stack: Stack, logs: Path | None, limit: int = 10) -> list[str]:
    """Stop the stack, keep its logs in `logs`/<shape> (if given); the first error lines its
    processes logged go to stderr."""
    errors = stack.stop()
    if logs is not None:
        stack.save_logs(logs)
    if errors:
        progress(f"the stack logged {len(errors)} error lines; first ones:")
        for line in errors[:limit]:
            progress(f"  {line}")
    return errors


async def measure_on_stack(
    stack: Stack,
    session: aiohttp.ClientSession,
    logs: Path | None,
    measure: Callable[[ProcessProbe, Reads], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Start `stack`, run `measure` with a probe of its processes and a connection reading its
    read model, then report the stack's error lines (to `logs`) and stop it, whatever
    happened; `measure`'s figures."""
    stop = asyncio.Event()
    try:
        await stack.start(session)
        probe = ProcessProbe(stack.pids())
        probe_task = asyncio.create_task(probe.run(stop))
        reads = await Reads.connect(stack.settings.conninfo)
        try:
            return await measure(probe, reads)
        finally:
            stop.set()
            await probe_task
            await reads.close()
    finally:
        stack_errors(stack, logs)
        await stack.forget()
