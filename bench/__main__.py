"""`python -m bench` (or `make bench`): start→complete throughput and latency of LinkFlow.

Starts the stack as `make run` does (`linkflow run all`, or `--workers N` extra worker processes)
on a database and Redis prefix of its own, creates the workflow shape, fires executions over HTTP
from `--concurrency` clients (closed loop), waits for all to close, and reads each execution's
start and close times from the read model. Prints one JSON line per shape with medians of
`--runs` runs. Shapes: `pure-3` (transform → condition → transform, no I/O) and `http-3` (three
sequential http_request nodes against a local HTTP server the harness serves). Latency runs from
the client sending the start request to the close time the engine recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

from infra.schema import drop_database, migrate
from infra.settings import Settings
from infra.streams import redis_client

PURE_3 = {
    "name": "pure-3",
    "nodes": [
        {"id": "a", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
        {
            "id": "b",
            "type": "condition",
            "config": {
                "conditions": [
                    {
                        "value": "{{ nodes.a.output.n }}",
                        "operator": "gte",
                        "operand": 0,
                        "branch": "yes",
                    }
                ]
            },
        },
        {"id": "c", "type": "transform", "config": {"set": {"done": "{{ nodes.a.output.n }}"}}},
    ],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c", "branch": "yes"}],
}


def http_3(base: str) -> dict[str, Any]:
    nodes = [
        {"id": f"h{i}", "type": "http_request", "config": {"url": f"{base}/ok/{i}"}}
        for i in range(3)
    ]
    edges = [{"source": "h0", "target": "h1"}, {"source": "h1", "target": "h2"}]
    return {"name": "http-3", "nodes": nodes, "edges": edges}


async def serve_ok() -> tuple[web.AppRunner, str]:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "i": request.match_info["i"]})

    app.router.add_get("/ok/{i}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stack:
    def __init__(self, settings: Settings, port: int, workers: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINKFLOW_")}
        env.update(
            LINKFLOW_PG_DB=settings.pg_db,
            LINKFLOW_REDIS_URL=settings.redis_url,
            LINKFLOW_REDIS_PREFIX=settings.redis_prefix,
            LINKFLOW_HTTP_PORT=str(port),
            LINKFLOW_ALLOW_PRIVATE_NETWORK="1",
            LINKFLOW_LOG_LEVEL="WARNING",
        )
        self.procs = [self._spawn("all", env)]
        for i in range(workers):
            self.procs.append(
                self._spawn("worker", env | {"LINKFLOW_METRICS_PORT": str(port + 1 + i)})
            )

    @staticmethod
    def _spawn(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gateways.cli", "run", role],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)


async def wait_ready(session: aiohttp.ClientSession, base: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("stack did not become ready")


async def one_run(
    session: aiohttp.ClientSession,
    api: str,
    headers: dict[str, str],
    ws: str,
    wf: str,
    n: int,
    concurrency: int,
    settings: Settings,
) -> dict[str, Any]:
    api_ms: list[float] = []
    ids: list[str] = []
    sent_at: dict[str, float] = {}
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            wall = time.time()
            async with session.post(
                f"{api}/workspaces/{ws}/workflows/{wf}/executions",
                json={"input": {"n": i}},
                headers=headers,
            ) as resp:
                body = await resp.json()
                assert resp.status == 202, body
            api_ms.append((time.perf_counter() - t0) * 1000)
            ids.append(body["execution_id"])
            sent_at[body["execution_id"]] = wall

    await asyncio.gather(*(client() for _ in range(concurrency)))
    with psycopg.connect(settings.conninfo) as conn:
        deadline = time.monotonic() + 600
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status <> 'running'), count(*) FROM rm_executions"
                " WHERE id = ANY(%s)",
                ([uuid.UUID(i) for i in ids],),
            ).fetchone()
            conn.commit()
            if row and row[0] == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row} of {n} executions closed")
            await asyncio.sleep(0.2)
        rows = conn.execute(
            "SELECT id, status, closed_at FROM rm_executions WHERE id = ANY(%s)",
            ([uuid.UUID(i) for i in ids],),
        ).fetchall()
    failed = sum(1 for r in rows if r[1] != "completed")
    # From the client sending the start request to the close recorded by the engine (one clock).
    latencies = [(r[2].timestamp() - sent_at[str(r[0])]) * 1000 for r in rows]
    span = max(r[2].timestamp() for r in rows) - min(sent_at.values())
    return {
        "executions": n,
        "failed": failed,
        "executions_per_s": round(n / span, 1),
        "p50_ms": round(pct(latencies, 0.50), 1),
        "p95_ms": round(pct(latencies, 0.95), 1),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "api_start_p95_ms": round(pct(api_ms, 0.95), 1),
    }


async def bench(args: argparse.Namespace) -> None:
    settings = Settings(
        pg_db=f"lf_bench_{uuid.uuid4().hex[:8]}", redis_prefix=f"lfbench:{uuid.uuid4().hex[:8]}:"
    )
    migrate(settings)
    port = args.port
    stack = Stack(settings, port, args.workers)
    target, target_base = await serve_ok()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            base, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api/v1"
            await wait_ready(session, base)
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            async with session.post(
                f"{api}/auth/register", json={"email": email, "password": "benchmark!", "name": "B"}
            ) as resp:
                ws = (await resp.json())["workspace"]["id"]
            async with session.post(
                f"{api}/auth/login", json={"email": email, "password": "benchmark!"}
            ) as resp:
                headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
            for shape in args.shapes:
                definition = PURE_3 if shape == "pure-3" else http_3(target_base)
                async with session.post(
                    f"{api}/workspaces/{ws}/workflows", json=definition, headers=headers
                ) as resp:
                    wf = (await resp.json())["id"]
                await one_run(
                    session,
                    api,
                    headers,
                    ws,
                    wf,
                    min(200, args.executions),
                    args.concurrency,
                    settings,
                )  # warm-up, not reported
                runs = [
                    await one_run(
                        session, api, headers, ws, wf, args.executions, args.concurrency, settings
                    )
                    for _ in range(args.runs)
                ]
                summary: dict[str, Any] = {"bench": shape, "system": "linkflow"}
                for key in ("executions_per_s", "p50_ms", "p95_ms", "p99_ms", "api_start_p95_ms"):
                    summary[key] = statistics.median(r[key] for r in runs)
                summary["layout"] = f"all + {args.workers} worker(s)"
                summary["concurrency"] = args.concurrency
                summary["runs"] = runs
                print(json.dumps(summary), flush=True)
    finally:
        await target.cleanup()
        stack.stop()
        drop_database(settings)
        await forget_keys(settings)


async def forget_keys(settings: Settings) -> None:
    """Delete this run's Redis keys (everything under its own prefix)."""
    client = redis_client(settings)
    try:
        async for key in client.scan_iter(match=f"{settings.redis_prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("shapes", nargs="*", default=["pure-3", "http-3"])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="extra worker processes")
    parser.add_argument("--port", type=int, default=8390)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
