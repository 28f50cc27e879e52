"""The HTTP target that the example workflows call (../shared/examples/README.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


def target_app() -> web.Application:
    flaky_calls: Counter[str] = Counter()
    echoed: list[dict[str, object]] = []
    app = web.Application()

    async def order(request: web.Request) -> web.Response:
        order_id = int(request.match_info["id"])
        status = "paid" if order_id % 2 == 0 else "pending"
        return web.json_response({"id": order_id, "status": status, "total": order_id * 10})

    async def flaky(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        flaky_calls[key] += 1
        if flaky_calls[key] <= 2:
            return web.json_response({"error": "try again"}, status=500)
        return web.json_response({"ok": True, "key": key})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async def price(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        return web.json_response({"sku": sku, "price": len(sku)})

    async def echo(request: web.Request) -> web.Response:
        """Answers the request it received (method, path, query, headers, body) and keeps it."""
        seen = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": await request.text(),
        }
        echoed.append(seen)
        return web.json_response(seen)

    async def received(request: web.Request) -> web.Response:
        """What `/echo` received so far (for tests: what really reached the target)."""
        return web.json_response(echoed)

    app.router.add_get("/orders/{id}", order)
    app.router.add_get("/flaky/{key}", flaky)
    app.router.add_get("/slow", slow)
    calls: Counter[str] = Counter()
    order: list[str] = []

    async def count(request: web.Request) -> web.Response:
        """Counts its calls per key, in order (what really reached the target: see `/counts`
        and `/calls`); `?delay_ms=` answers that much later."""
        key = request.match_info["key"]
        calls[key] += 1
        order.append(key)
        await asyncio.sleep(int(request.query.get("delay_ms", "0")) / 1000)
        return web.json_response({"key": key})

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(dict(calls))

    async def call_order(request: web.Request) -> web.Response:
        return web.json_response(order)

    async def nested(request: web.Request) -> web.Response:
        """A JSON body of `depth` nested arrays (counted under `nested`)."""
        calls["nested"] += 1
        depth = int(request.match_info["depth"])
        return web.Response(text="[" * depth + "]" * depth, content_type="application/json")

    async def big(request: web.Request) -> web.Response:
        """A JSON string of `n` characters (counted under `big`)."""
        calls["big"] += 1
        return web.json_response("x" * int(request.match_info["n"]))

    app.router.add_get("/missing", missing)
    app.router.add_get("/big/{n}", big)
    app.router.add_get("/count/{key}", count)
    app.router.add_get("/counts", counts)
    app.router.add_get("/calls", call_order)
    app.router.add_get("/nested/{depth}", nested)
    app.router.add_get("/price/{sku}", price)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/echoed", received)
    return app


@asynccontextmanager
async def serve_target() -> AsyncIterator[str]:
    """Serve the target on a free loopback port; yields its base URL."""
    runner = web.AppRunner(target_app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


if __name__ == "__main__":  # `python tests/target.py [port]`: serve it for trying the examples
    import sys

    web.run_app(
        target_app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    )
