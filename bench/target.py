"""`python -m bench.target PORT`: the local HTTP server the http shapes call, in its own process
so that it takes no time from the load generator's event loop.

- `GET /ok/{i}`: a small JSON body at once (the `http-3` shape).
- `GET /call/{execution}/{node}?sleep=S`: records the call (execution, node, arrival time on
  the wall clock) and answers after `S` seconds (default 0). The fault shapes (`overload`,
  `chaos`, `noisy`) name their calls this way, so that every outbound call the workers made can
  be compared with the attempts the event log holds.
- `GET /calls`: every recorded call as JSON `[[execution, node, arrived_at], …]`;
  `POST /calls/reset` forgets them.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web

CALLS: web.AppKey[list[tuple[str, str, float]]] = web.AppKey("calls", list)


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "i": request.match_info["i"]})


async def call(request: web.Request) -> web.Response:
    arrived = time.time()
    execution, node = request.match_info["execution"], request.match_info["node"]
    request.app[CALLS].append((execution, node, arrived))
    sleep = float(request.query.get("sleep", "0") or 0)
    if sleep > 0:
        await asyncio.sleep(sleep)
    return web.json_response({"ok": True, "node": node})


async def calls(request: web.Request) -> web.Response:
    return web.json_response(request.app[CALLS])


async def reset(request: web.Request) -> web.Response:
    request.app[CALLS].clear()
    return web.json_response({"ok": True})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    app = web.Application()
    app[CALLS] = []
    app.router.add_get("/ok/{i}", ok)
    app.router.add_get("/call/{execution}/{node}", call)
    app.router.add_get("/calls", calls)
    app.router.add_post("/calls/reset", reset)
    app.router.add_get("/ready", ready)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    # A backlog above aiohttp's default 128: the overload shape's workers open many
    # connections at once.
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, backlog=1024
    )


if __name__ == "__main__":
    main()
