"""SSE fan-out: many open streams on one gateway, event → client latency and the gateway's RSS.

`measure_sse(base_url, token, workspace_id, start_one, streams=500, ...)` opens `streams` SSE
connections to a running gateway, then starts `executions` executions (`start_one`, at `rate_s`
per second) and times every delivery to every client:

- `kind="live"` (default): every stream follows `GET …/executions/live` of the workspace. For
  each execution, `running_ms` is from the moment its start answered 202 to the moment a client
  received its `running` change, and `completed_ms` from the close time the system recorded
  (`closed_at`, wall clock of the same machine) to the moment a client received `completed`.
  A `running` change that collapsed into its `completed` (the execution closed before the feed
  read its row) is counted in `collapsed`, not as missing.
- `kind="execution"`: stream i follows execution i (started just before it is opened, with
  `start_one`); `event_ms` is from each event's recorded time to its receipt, for the events
  recorded after the stream was open (those before come from the event store, not live).

The gateway's RSS (VmRSS of `gateway_pid`, on this machine) is sampled before the streams open,
once they are open and at the end. One dict comes back: streams opened and refused, deliveries
expected and received, latency percentiles (p50/p95/max, ms) and RSS (MB).

Standalone, against `make run` (which runs every role in one process, so its RSS is all of them;
run `linkflow run gateway` apart for the gateway's own):

    make run                                   # in one terminal
    .venv/bin/python -m bench.sse --base http://127.0.0.1:8000 --streams 500 \\
        --executions 50 --rate 5 --pid "$(pgrep -f 'linkflow run' | head -1)"

It signs up a user, creates a `pure-3` workflow, measures and prints one JSON line. Raise the
open-files limit first if `ulimit -n` is below about 2 × streams (the harness raises its own soft
limit to the hard one). Not wired into `python -m bench` (its caller decides where it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from bench.api import create_workflow, sign_up
from bench.load import ms, pct
from bench.procs import rss_kb
from bench.shapes import PURE_3

# Starts one execution; answers its id once the start answered 202.
StartOne = Callable[[], Awaitable[str]]
# The standalone run's shape for execution streams: it must outlive the opening of its stream.
WAIT_THEN_TRANSFORM: dict[str, Any] = {
    "name": "sse-wait",
    "nodes": [
        {"id": "wait", "type": "delay", "config": {"seconds": 2}},
        {"id": "done", "type": "transform", "config": {"set": {"n": "{{ trigger.n }}"}}},
    ],
    "edges": [{"source": "wait", "target": "done"}],
}


@dataclass
class Deliveries:
    """What the clients received: (execution id, status or event type) → receipt times."""

    wall: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    mono: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    recorded: dict[tuple[str, str], float] = field(default_factory=dict)
    live_ms: list[float] = field(default_factory=list)  # execution streams: the live events
    frames: int = 0

    def got(self, key: tuple[str, str]) -> None:
        self.wall.setdefault(key, []).append(time.time())
        self.mono.setdefault(key, []).append(time.monotonic())
        self.frames += 1


def _field(data: bytes, name: bytes) -> str | None:
    """A top-level string field of a JSON object, found without parsing the rest (the data of
    a live item or event is large; 500 clients parsing it would time the client, not the
    server)."""
    start = data.find(b'"' + name + b'":"')
    if start < 0:
        return None
    start += len(name) + 4
    return data[start : data.index(b'"', start)].decode()


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    opened: asyncio.Queue[int],
    handle: Callable[[bytes], None],
) -> None:
    """One SSE client: report the open (HTTP status), then hand each event's data to `handle`."""
    try:
        async with session.get(url, headers=headers) as resp:
            await opened.put(resp.status)
            if resp.status != 200:
                return
            while True:
                frame = await resp.content.readuntil(b"\n\n")
                if not frame:
                    return
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        handle(line[6:])
    except (aiohttp.ClientError, asyncio.IncompleteReadError, ValueError):
        await opened.put(0)


def _position(data: bytes) -> str:
    """The `position` of an execution event's data (its first field)."""
    start = data.index(b'"position":') + len(b'"position":')
    return data[start : data.index(b",", start)].decode()


def _iso_s(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def _summary(values: list[float]) -> dict[str, float | None]:
    top = max(values) if values else None
    return {"p50": ms(pct(values, 0.5)), "p95": ms(pct(values, 0.95)), "max": ms(top)}


def _rss_mb(pid: int | None) -> float | None:
    kb = rss_kb(pid) if pid else None
    return round(kb / 1024, 1) if kb else None


async def measure_sse(
    base_url: str,
    token: str,
    workspace_id: str,
    start_one: StartOne,
    streams: int = 500,
    *,
    kind: str = "live",
    executions: int = 50,
    rate_s: float = 5.0,
    gateway_pid: int | None = None,
    settle_s: float = 10.0,
) -> dict[str, Any]:
    """Open the streams, start the executions, wait up to `settle_s` for the last deliveries;
    the figures (see the module docstring)."""
    root = f"{base_url.rstrip('/')}/api/v1/workspaces/{workspace_id}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    seen = Deliveries()
    answered: dict[str, float] = {}
    opened: asyncio.Queue[int] = asyncio.Queue()
    rss: dict[str, float | None] = {"before": _rss_mb(gateway_pid)}
    sampler = asyncio.create_task(_peak_rss(gateway_pid, rss))
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Task[None]] = []

        def on_change(data: bytes) -> None:
            execution, status = _field(data, b"id"), _field(data, b"status")
            if execution and status:
                seen.got((execution, status))
                closed_at = _iso_s(_field(data, b"closed_at"))
                if closed_at is not None:
                    seen.recorded[(execution, status)] = closed_at

        def on_event(opened_at: float) -> Callable[[bytes], None]:
            """A stream's handler: times the events recorded after it was opened."""

            def handle(data: bytes) -> None:
                at = _iso_s(_field(data, b"recorded_at"))
                seen.got((_position(data), _field(data, b"type") or ""))
                if at is not None and at >= opened_at:
                    seen.live_ms.append((time.time() - at) * 1000)

            return handle

        statuses: list[int] = []
        if kind == "live":
            for _ in range(streams):
                tasks.append(
                    asyncio.create_task(
                        _follow(session, f"{root}/executions/live", headers, opened, on_change)
                    )
                )
            statuses = [await opened.get() for _ in range(streams)]
            rss["open"] = _rss_mb(gateway_pid)
            interval = 1 / rate_s
            for _ in range(executions):
                execution_id = await start_one()
                answered[execution_id] = time.monotonic()
                await asyncio.sleep(interval)
        else:
            for _ in range(streams):
                execution_id = await start_one()
                url = f"{root}/executions/{execution_id}/events"
                handle = on_event(time.time())
                tasks.append(asyncio.create_task(_follow(session, url, headers, opened, handle)))
                statuses.append(await opened.get())
            rss["open"] = _rss_mb(gateway_pid)
        await _settle(seen, tasks, answered, statuses.count(200), settle_s)
        rss["end"] = _rss_mb(gateway_pid)
        for task in [*tasks, sampler]:
            task.cancel()
        await asyncio.gather(*tasks, sampler, return_exceptions=True)
    result: dict[str, Any] = {
        "bench": "sse",
        "kind": kind,
        "streams": streams,
        "opened": statuses.count(200),
        "refused": {str(code): statuses.count(code) for code in set(statuses) - {200}},
        "frames": seen.frames,
        "rss_mb": rss,
    }
    if kind == "live":
        result |= _live_figures(seen, answered, statuses.count(200))
    else:
        result |= {"live_events": len(seen.live_ms), "event_ms": _summary(seen.live_ms)}
    return result


async def _settle(
    seen: Deliveries,
    tasks: list[asyncio.Task[None]],
    answered: dict[str, float],
    clients: int,
    settle_s: float,
) -> None:
    """Until every live client has every completion, or every execution stream has ended (each
    ends after its execution's close); `settle_s` at most."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        if answered and all(len(seen.mono.get((e, "completed"), [])) >= clients for e in answered):
            return
        if not answered and all(task.done() for task in tasks):
            return
        await asyncio.sleep(0.1)


async def _peak_rss(pid: int | None, rss: dict[str, float | None]) -> None:
    """Keep the largest RSS seen (sampled every 0.2 s) in `rss["peak"]`."""
    while pid:
        now = _rss_mb(pid)
        if now is not None:
            rss["peak"] = max(now, rss.get("peak") or 0.0)
        await asyncio.sleep(0.2)


def _live_figures(seen: Deliveries, answered: dict[str, float], clients: int) -> dict[str, Any]:
    running: list[float] = []
    completed: list[float] = []
    collapsed = missing = 0
    for execution, at in answered.items():
        got = seen.mono.get((execution, "running"), [])
        running += [(t - at) * 1000 for t in got]
        closes = seen.wall.get((execution, "completed"), [])
        closed_at = seen.recorded.get((execution, "completed"), 0.0)
        completed += [(t - closed_at) * 1000 for t in closes]
        collapsed += max(0, len(closes) - len(got))
        missing += clients - len(closes)
    return {
        "executions": len(answered),
        "expected": len(answered) * clients,
        "missing": missing,
        "collapsed": collapsed,
        "running_ms": _summary(running),
        "completed_ms": _summary(completed),
    }


async def _standalone(args: argparse.Namespace) -> dict[str, Any]:
    api = f"{args.base.rstrip('/')}/api/v1"
    async with aiohttp.ClientSession() as session:
        workspace, headers = await sign_up(session, api)
        shape = PURE_3 if args.kind == "live" else WAIT_THEN_TRANSFORM
        workflow = await create_workflow(session, api, workspace, headers, shape)
        url = f"{api}/workspaces/{workspace}/workflows/{workflow}/executions"
        n = 0

        async def start_one() -> str:
            nonlocal n
            n += 1
            async with session.post(url, json={"input": {"n": n}}, headers=headers) as resp:
                body = await resp.json()
                assert resp.status == 202, body
                return str(body["execution_id"])

        token = headers["Authorization"].removeprefix("Bearer ")
        return await measure_sse(
            args.base,
            token,
            workspace,
            start_one,
            args.streams,
            kind=args.kind,
            executions=args.executions,
            rate_s=args.rate,
            gateway_pid=args.pid,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="the gateway's root URL")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--kind", choices=("live", "execution"), default="live")
    parser.add_argument("--executions", type=int, default=50, help="started (live kind)")
    parser.add_argument("--rate", type=float, default=5.0, help="starts per second (live kind)")
    parser.add_argument("--pid", type=int, default=None, help="the gateway's pid, for its RSS")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    print(json.dumps(asyncio.run(_standalone(args))))


if __name__ == "__main__":
    main()
