"""The export benchmark (issue 14, item 5): rows per second of `GET …/executions/export` through
the real HTTP route of a gateway process, and how much that process's RSS grows meanwhile.

`measure_export(base_url, token, workspace_id, q, fmt, pid)` streams one export and reports it;
`seed_executions` bulk-loads `rm_executions` (COPY, exactly the columns the projector writes,
`projections.execution_rows._EXECUTION_COLUMNS`) with executions of one workspace, also used by
tests/integration/test_export.py. `python -m bench.export` runs the whole thing on a database of
its own: one gateway process (`linkflow run gateway`), a user and workspace, `--rows`
executions in it and `--other-rows` in other workspaces, then one export per (q, format); it
prints one JSON line to stdout (progress to stderr) and removes the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
from psycopg.types.json import Jsonb

from bench.api import sign_up
from bench.procs import progress, rss_kb
from bench.stack import Layout, Stack, bench_settings
from infra.db import DictConnection, connect
from projections.execution_rows import _EXECUTION_COLUMNS

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STATUSES = ("completed", "completed", "completed", "failed", "running", "canceled", "timed_out")
TRIGGERS = ("manual", "webhook", "schedule")
WORKFLOWS = 20
RSS_SAMPLE_S = 0.02
DEFAULT_QUERIES = ("", "status = 'failed'", "ORDER BY duration_ms DESC")


def execution_row(
    workspace_id: UUID, workflows: Sequence[UUID], i: int, pad: str = ""
) -> dict[str, Any]:
    """The i-th execution of a seeded workspace, column by column (varied status, trigger,
    workflow, duration; `pad` makes the input larger)."""
    status = STATUSES[i % len(STATUSES)]
    started = T0 + timedelta(seconds=i)
    closed = None if status == "running" else started + timedelta(milliseconds=(i * 37) % 5000)
    error = None
    if status == "failed":
        error = {"type": "http_status", "message": "HTTP 500", "node_id": "call"}
    elif status in ("canceled", "timed_out"):
        error = {"type": status, "message": f"execution {status}"}
    return {
        "id": uuid.uuid4(),
        "workspace_id": workspace_id,
        "workflow_id": workflows[i % len(workflows)],
        "workflow_name": f"workflow-{i % len(workflows)}",
        "version": 1 + i % 3,
        "status": status,
        "trigger": TRIGGERS[i % len(TRIGGERS)],
        "input": Jsonb({"order": i, "customer": f"c-{i % 977}", "pad": pad}),
        "started_at": started,
        "event_version": 8,
        "output": Jsonb({"ok": True, "total": i % 1000}) if status == "completed" else None,
        "error": Jsonb(error) if error else None,
        "closed_at": closed,
        "callback": None,
        "search_attributes": Jsonb({"region": ("eu", "us")[i % 2]}),
    }


async def seed_executions(
    conn: DictConnection, workspace_id: UUID, count: int, *, input_bytes: int = 0
) -> None:
    """`count` executions of the workspace in `rm_executions`, in one COPY (committed): the
    columns the projector writes, none other (the generated ones PostgreSQL derives)."""
    workflows = [uuid.uuid4() for _ in range(WORKFLOWS)]
    pad = "x" * input_bytes
    columns = ", ".join(_EXECUTION_COLUMNS)
    async with conn.cursor() as cur:
        async with cur.copy(f"COPY rm_executions ({columns}) FROM STDIN") as copy:
            for i in range(count):
                row = execution_row(workspace_id, workflows, i, pad)
                await copy.write_row([row[c] for c in _EXECUTION_COLUMNS])
    await conn.commit()


async def _sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        kb = rss_kb(pid)
        if kb is not None:
            peak[0] = max(peak[0], kb)
        try:
            await asyncio.wait_for(stop.wait(), timeout=RSS_SAMPLE_S)
        except TimeoutError:
            pass


def _api(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/api/v1") else base + "/api/v1"


async def measure_export(
    base_url: str, token: str, workspace_id: str, q: str, fmt: str, pid: int
) -> dict[str, Any]:
    """Stream one export (`base_url`: the gateway, with or without `/api/v1`; `token`: a bearer
    token of a member) to its end and report rows, bytes, seconds, rows/s, the time to the
    first byte and the gateway process's (`pid`) RSS before and at most during it (sampled every
    20 ms). Rows are counted as line ends (the seeded data has none inside a value; a CSV's
    header is not counted); `complete` is False when the body ended without its end."""
    url = f"{_api(base_url)}/workspaces/{workspace_id}/executions/export"
    params = {"format": fmt, **({"q": q} if q else {})}
    before = rss_kb(pid) or 0
    peak = [before]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, peak, stop))
    lines = size = 0
    complete = True
    first_byte = None
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, params=params, headers=headers) as resp:
                if resp.status != 200:
                    return {"q": q, "format": fmt, "status": resp.status, "body": await resp.text()}
                try:
                    async for data in resp.content.iter_any():
                        if first_byte is None:
                            first_byte = time.perf_counter() - started
                        lines += data.count(b"\n")
                        size += len(data)
                except aiohttp.ClientPayloadError:
                    complete = False
    finally:
        stop.set()
        await sampler
    seconds = time.perf_counter() - started
    rows = lines - 1 if fmt == "csv" else lines
    return {
        "q": q,
        "format": fmt,
        "status": 200,
        "complete": complete,
        "rows": rows,
        "bytes": size,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "first_byte_s": round(first_byte or seconds, 3),
        "rss_mb_before": round(before / 1024, 1),
        "rss_mb_max": round(peak[0] / 1024, 1),
        "rss_growth_mb": round((peak[0] - before) / 1024, 1),
    }


async def _seed(stack: Stack, workspace_id: UUID, args: argparse.Namespace) -> float:
    """Seed the workspace and the other workspaces; the seconds it took."""
    started = time.perf_counter()
    conn = await connect(stack.settings, autocommit=False)
    try:
        await seed_executions(conn, workspace_id, args.rows, input_bytes=args.input_bytes)
        others = args.other_rows
        while others > 0:
            batch = min(others, 100_000)
            await seed_executions(conn, uuid.uuid4(), batch, input_bytes=args.input_bytes)
            others -= batch
            progress(f"  {args.other_rows - others} rows of other workspaces")
        await conn.set_autocommit(True)
        await conn.execute("VACUUM ANALYZE rm_executions")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = bench_settings()
    stack = Stack(settings, Layout("gateway"))
    try:
        async with aiohttp.ClientSession() as session:
            await stack.start(session)
            base = stack.gateways[0]
            workspace, headers = await sign_up(session, f"{base}/api/v1")
        token = headers["Authorization"].removeprefix("Bearer ")
        progress(f"seeding {args.rows} executions (+{args.other_rows} of other workspaces)")
        seed_s = await _seed(stack, UUID(workspace), args)
        pid = stack.children[0].pid
        runs = []
        for q in args.q:
            for fmt in args.formats.split(","):
                progress(f"export format={fmt} q={q!r}")
                runs.append(await measure_export(base, token, workspace, q, fmt, pid))
                progress(f"  {runs[-1]}")
        return {
            "bench": "export",
            "rows_in_workspace": args.rows,
            "rows_in_read_model": args.rows + args.other_rows,
            "input_bytes": args.input_bytes,
            "seed_s": round(seed_s, 1),
            "runs": runs,
        }
    finally:
        stack.stop()
        await stack.forget()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="executions of the workspace")
    parser.add_argument(
        "--other-rows", type=int, default=0, help="executions of other workspaces (read model)"
    )
    parser.add_argument("--input-bytes", type=int, default=0, help="padding in each input")
    parser.add_argument("--formats", default="ndjson,csv")
    parser.add_argument(
        "--q", action="append", help=f"a filter (repeatable; default: {DEFAULT_QUERIES})"
    )
    args = parser.parse_args(argv)
    args.q = args.q or list(DEFAULT_QUERIES)
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
