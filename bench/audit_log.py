"""The auditors' event log under a large history (issue 15): `GET …/events` pages of 1,000 at
random positions, with 1,000,000 events in the log.

One gateway process (`linkflow run gateway`) on a database of its own; a user and workspace
made through the API; then `--events` events **bulk-loaded** into `linkflow_events` for that
workspace: pure-3 executions (8 events each, their stored bytes made by the event store's own
mapper from domain events, so every loaded event decodes as a real one), each execution's
events consecutive, recorded by the user (`actor`) with a request id, as the append writes them.
Nothing else reads them (no relay or projector runs). Then one client asks `--repeats` pages of
`--limit` events after random positions, timed from the request to the last byte, and as many
with `types=ExecutionCompleted` (no target). One JSON line on stdout (progress on stderr); the
database is removed at the end.

    python -m bench.audit_log [--events 1000000] [--repeats 200] [--limit 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from bench.api import sign_up
from bench.load import ms, pct
from bench.procs import progress
from bench.shapes import PURE_3
from bench.stack import Layout, Stack, bench_settings
from domain.definition import parse_definition
from domain.execution import Execution
from infra.eventstore import EventStore
from infra.settings import Settings

TARGET_P95_MS = 50
CHUNK_EXECUTIONS = 25_000

_LOAD = """
INSERT INTO linkflow_events
    (originator_id, originator_version, topic, state, workspace_id, actor, request_id)
SELECT x.id, t.version, t.topic, t.state, %(ws)s, %(actor)s, x.request_id
  FROM (SELECT g, gen_random_uuid() AS id, md5(g::text) AS request_id
          FROM generate_series(1, %(executions)s) AS g) x
 CROSS JOIN unnest(%(versions)s::bigint[], %(topics)s::text[], %(states)s::bytea[])
            AS t (version, topic, state)
 ORDER BY x.g, t.version
"""


def template(settings: Settings, workspace: str) -> tuple[list[int], list[str], list[bytes]]:
    """One pure-3 execution's events as the event store stores them: versions, topics, states."""
    definition = parse_definition(PURE_3).to_json()
    now = datetime.now(UTC)
    ex = Execution.start(uuid.uuid4(), workspace, str(uuid.uuid4()), 1, definition, {"n": 1}, now)
    for node, output in (("a", {"n": 1}), ("b", {"branch": "yes"}), ("c", {"done": 1})):
        ex.start_node(node, 1, now)
        ex.complete_node(node, 1, output, now)
    store = EventStore(settings)
    try:
        stored = [store.mapper.to_stored_event(e) for e in ex.collect_events()]
    finally:
        store.close()
    return (
        [s.originator_version for s in stored],
        [s.topic for s in stored],
        [s.state for s in stored],
    )


def load(settings: Settings, workspace: str, user: str, events: int) -> float:
    """Bulk-load about `events` events (whole executions) of `workspace`; the seconds it took."""
    started = time.perf_counter()
    versions, topics, states = template(settings, workspace)
    executions = max(1, events // len(versions))
    actor = Jsonb({"type": "user", "id": user})
    with psycopg.connect(settings.conninfo, autocommit=True) as conn:
        done = 0
        while done < executions:
            n = min(CHUNK_EXECUTIONS, executions - done)
            conn.execute(
                _LOAD,
                {
                    "ws": workspace,
                    "actor": actor,
                    "executions": n,
                    "versions": versions,
                    "topics": topics,
                    "states": states,
                },
            )
            done += n
            progress(f"audit log: loaded {done * len(versions):,} events")
        conn.execute("VACUUM ANALYZE linkflow_events")
    return time.perf_counter() - started


async def _pages(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    head: int,
    limit: int,
    repeats: int,
    extra: dict[str, str],
) -> tuple[list[float], int]:
    """Milliseconds of each page after a random position (to the last byte); items of the last."""
    rng = random.Random(15)
    times: list[float] = []
    items = 0
    for _ in range(repeats):
        after = rng.randrange(0, max(head - limit, 1))
        params = {"after": str(after), "limit": str(limit), **extra}
        started = time.perf_counter()
        async with session.get(url, params=params, headers=headers) as resp:
            raw = await resp.read()
        times.append((time.perf_counter() - started) * 1000)  # the last byte: before parsing
        body = json.loads(raw)
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {body}")
        items = len(body["items"])
    return times, items


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = bench_settings()
    stack = Stack(settings, Layout("gateway"))
    try:
        async with aiohttp.ClientSession() as session:
            await stack.start(session)
            api = f"{stack.gateways[0]}/api/v1"
            workspace, headers = await sign_up(session, api)
            async with session.get(f"{api}/me", headers=headers) as resp:
                user = (await resp.json())["user"]["id"]
            progress(f"audit log: loading {args.events:,} events")
            load_s = await asyncio.to_thread(load, settings, workspace, user, args.events)
            url = f"{api}/workspaces/{workspace}/events"
            async with session.get(url, params={"limit": "1"}, headers=headers) as resp:
                head = (await resp.json())["head"]
            times, items = await _pages(session, url, headers, head, args.limit, args.repeats, {})
            progress(f"audit log: pages p95 {ms(pct(times, 0.95))} ms")
            typed, typed_items = await _pages(
                session,
                url,
                headers,
                head,
                args.limit,
                args.repeats,
                {"types": "ExecutionCompleted"},
            )
        return {
            "bench": "audit_log",
            "events": head,
            "load": "bulk (bench.audit_log): pure-3 executions' events as the event store"
            " stores them, one workspace",
            "load_s": round(load_s, 1),
            "limit": args.limit,
            "repeats": args.repeats,
            "page_p50_ms": ms(pct(times, 0.5)),
            "page_p95_ms": ms(pct(times, 0.95)),
            "page_max_ms": ms(max(times)),
            "page_items": items,
            "typed_page_p50_ms": ms(pct(typed, 0.5)),
            "typed_page_p95_ms": ms(pct(typed, 0.95)),
            "typed_page_items": typed_items,
            "target_page_p95_ms": TARGET_P95_MS,
        }
    finally:
        stack.stop()
        await stack.forget()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_log", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
