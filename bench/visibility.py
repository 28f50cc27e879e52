"""The `visibility` shape (issue 14): the analysts' queries on a large history.

A `split` stack (one gateway, one worker). One workspace gets 20 workflows through the API, then
`--visibility-rows` (1,000,000) executions bulk-loaded into its read models over 30 days, with
three search attributes each (`bench.visibility_data`, which says exactly what it writes).
Then, one client, each query `--visibility-repeats` (200) times over HTTP, timed from the
request to the last byte of the answer:
- `list`: a first page of 50 with `q` on indexed fields and one attribute
  (`status = 'failed' AND workflow_name = 'wf-NN' AND attr.region = 'R'`, rotating NN and R);
- `pages`: the next pages by cursor of `attr.region = 'eu' AND status = 'completed'`;
- `count`: the exact count grouped by status over the whole workspace;
- `stats`: 30 days at 1 h (720 buckets) over the whole workspace;
- also reported, without a target: count grouped by status and workflow, and /workflows/stats;
- `export`: every match of `workflow_name IN ('wf-00', 'wf-01')` (100,000 executions) as
  NDJSON, rows/s and the gateway's RSS growth (`bench.export`);
- `sse`: 500 open live streams on the gateway while executions run, event → client latency and
  the gateway's RSS (`bench.sse`).
One JSON line with each figure beside its target.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bench.api import create_workflow, sign_up
from bench.load import ms, pct
from bench.procs import progress
from bench.stack import Layout, Stack, bench_settings
from bench.visibility_data import REGIONS, load

TARGETS = {
    "list_p95_ms": 50,
    "pages_p95_ms": 50,
    "count_p95_ms": 250,
    "stats_p95_ms": 100,
    "export_rows_per_s": 20_000,
    "export_rss_growth_mb": 30,
    "sse_p95_ms": 100,
    "sse_gateway_rss_mb": 200,
}
WORKFLOWS = 20


def _definition(i: int) -> dict[str, Any]:
    return {
        "name": f"wf-{i:02d}",
        "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    }


async def _timed(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    params_of: Callable[[int], dict[str, str]],
    repeats: int,
) -> tuple[list[float], Any]:
    """Milliseconds of each GET (to the last byte); the last answer's body."""
    times: list[float] = []
    body: Any = None
    for i in range(repeats):
        started = time.perf_counter()
        async with session.get(url, params=params_of(i), headers=headers) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{url} answered {resp.status}: {body}")
        times.append((time.perf_counter() - started) * 1000)
    return times, body


def _figures(name: str, times: list[float]) -> dict[str, Any]:
    return {
        f"{name}_p50_ms": ms(pct(times, 0.5)),
        f"{name}_p95_ms": ms(pct(times, 0.95)),
        f"{name}_max_ms": ms(max(times)),
    }


async def _pages(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], repeats: int
) -> list[float]:
    """The next `repeats` pages after the first, by cursor (a new chain when one ends)."""
    params = {"q": "attr.region = 'eu' AND status = 'completed'", "limit": "50"}
    times: list[float] = []
    cursor: str | None = None
    while len(times) < repeats:
        started = time.perf_counter()
        query = params | ({"cursor": cursor} if cursor else {})
        async with session.get(url, params=query, headers=headers) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"pages answered {resp.status}: {body}")
        if cursor:
            times.append((time.perf_counter() - started) * 1000)
        cursor = body["next_cursor"]
    return times


async def measure_queries(
    session: aiohttp.ClientSession, api: str, ws: str, headers: dict[str, str], repeats: int
) -> dict[str, Any]:
    base = f"{api}/workspaces/{ws}"
    out: dict[str, Any] = {}

    def listed(i: int) -> dict[str, str]:
        region = REGIONS[i % len(REGIONS)]
        q = f"status = 'failed' AND workflow_name = 'wf-{i % WORKFLOWS:02d}'"
        return {"q": f"{q} AND attr.region = '{region}'", "limit": "50"}

    times, body = await _timed(session, f"{base}/executions", headers, listed, repeats)
    out |= _figures("list", times) | {"list_last_items": len(body["items"])}
    progress(f"visibility: list p95 {out['list_p95_ms']} ms")
    out |= _figures("pages", await _pages(session, f"{base}/executions", headers, repeats))
    progress(f"visibility: pages p95 {out['pages_p95_ms']} ms")
    by_status = {"group_by": "status"}
    times, body = await _timed(
        session, f"{base}/executions/count", headers, lambda i: by_status, repeats
    )
    out |= _figures("count", times) | {"count_total": body["count"]}
    progress(f"visibility: count p95 {out['count_p95_ms']} ms ({body['count']:,} executions)")
    by_both = {"group_by": "status,workflow_id"}
    times, _ = await _timed(
        session, f"{base}/executions/count", headers, lambda i: by_both, repeats
    )
    out |= _figures("count_by_workflow", times)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    window = {
        "from": (now - timedelta(days=30)).isoformat(),
        "to": now.isoformat(),
        "interval": "1h",
    }
    times, body = await _timed(
        session, f"{base}/executions/stats", headers, lambda i: window, repeats
    )
    out |= _figures("stats", times) | {"stats_buckets": len(body["buckets"])}
    progress(f"visibility: stats p95 {out['stats_p95_ms']} ms ({len(body['buckets'])} buckets)")
    month = {"from": window["from"], "to": window["to"]}
    times, body = await _timed(
        session, f"{base}/workflows/stats", headers, lambda i: month, repeats
    )
    out |= _figures("workflow_stats", times) | {"workflow_stats_items": len(body["items"])}
    return out


async def run(args: argparse.Namespace, session: aiohttp.ClientSession, target: str) -> dict:
    settings = bench_settings()
    stack = Stack(settings, Layout("split", gateways=1, workers=1), env=args.stack_env)
    line: dict[str, Any] = {
        "shape": "visibility",
        "system": "linkflow",
        "rows": args.visibility_rows,
        "repeats": args.visibility_repeats,
        "load": "bulk (bench.visibility_data): the rm_executions and rm_execution_attributes"
        " rows the projector writes for closed executions",
        "targets": TARGETS,
    }
    try:
        await stack.start(session)
        api = f"{stack.gateways[0]}/api/v1"
        ws, headers = await sign_up(session, api)
        workflows = [
            await create_workflow(session, api, ws, headers, _definition(i))
            for i in range(WORKFLOWS)
        ]
        line["load_s"] = round(load(settings.conninfo, ws, workflows, args.visibility_rows), 1)
        line |= await measure_queries(session, api, ws, headers, args.visibility_repeats)
    finally:
        errors = stack.stop()
        line["process_errors"] = errors[:5]
        await stack.forget()
    return line
