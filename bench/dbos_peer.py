"""`python -m bench.dbos_peer --port P --database-url URL --target URL`: the side-by-side peer,
the benchmark's two shapes written for DBOS Transact 3.4 (three `@DBOS.step` functions in one
`@DBOS.workflow` each), served over HTTP like LinkFlow's start endpoint so that the same load
generator drives both: `POST /start/{shape}` with `{"input": {...}}` starts the workflow
(`DBOS.start_workflow`, durable once it answers) and answers `202 {"execution_id"}`.
Runs in its own process (needs the optional `bench` extra: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from aiohttp import web
from dbos import DBOS, DBOSConfig

TARGET = {"url": ""}  # the local HTTP server of the http-3 shape, set at start


@DBOS.step()
def set_n(trigger: dict[str, Any]) -> dict[str, Any]:
    return {"n": trigger["n"]}


@DBOS.step()
def branch(a: dict[str, Any]) -> dict[str, Any]:
    return {"branch": "yes" if a["n"] >= 0 else None, "value": a["n"]}


@DBOS.step()
def set_done(a: dict[str, Any]) -> dict[str, Any]:
    return {"done": a["n"]}


@DBOS.workflow()
def pure_3(trigger: dict[str, Any]) -> dict[str, Any] | None:
    """transform → condition → transform, as LinkFlow's pure-3 definition."""
    a = set_n(trigger)
    b = branch(a)
    return set_done(a) if b["branch"] == "yes" else None


@DBOS.step()
def http_get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (a local URL)
        return {"status": resp.status, "body": json.loads(resp.read())}


@DBOS.workflow()
def http_3(trigger: dict[str, Any]) -> dict[str, Any]:
    """Three sequential GETs against the harness's target server, as LinkFlow's http-3."""
    out: dict[str, Any] = {}
    for i in range(3):
        out = http_get(f"{TARGET['url']}/ok/{i}")
    return out


WORKFLOWS: dict[str, Callable[[dict[str, Any]], Any]] = {"pure-3": pure_3, "http-3": http_3}


async def start(request: web.Request) -> web.Response:
    workflow = WORKFLOWS.get(request.match_info["shape"])
    if workflow is None:
        return web.json_response({"error": "unknown shape"}, status=404)
    trigger = (await request.json())["input"]
    handle = await asyncio.to_thread(DBOS.start_workflow, workflow, trigger)
    return web.json_response({"execution_id": handle.workflow_id}, status=202)


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_peer", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="postgresql://… (its own DB)")
    parser.add_argument("--target", required=True, help="base URL of the target server")
    parser.add_argument("--threads", type=int, default=64, help="DBOS max_executor_threads")
    args = parser.parse_args()
    TARGET["url"] = args.target
    config: DBOSConfig = {
        "name": "linkflow-bench-peer",
        "system_database_url": args.database_url,
        "max_executor_threads": args.threads,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    app = web.Application()
    app.router.add_post("/start/{shape}", start)
    app.router.add_get("/ready", ready)
    try:
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
