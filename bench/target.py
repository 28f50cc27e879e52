"""`python -m bench.target PORT`: the fast local HTTP server the `http-3` shape calls
(`GET /ok/{i}` answers a small JSON body). Runs in its own process so that it takes no time from
the load generator's event loop.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "i": request.match_info["i"]})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def main() -> None:
    app = web.Application()
    app.router.add_get("/ok/{i}", ok)
    app.router.add_get("/ready", ready)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
