"""`python -m bench.pgproxy LISTEN_PORT CONTROL_PORT UPSTREAM_HOST UPSTREAM_PORT`: a TCP proxy
in front of PostgreSQL that the `chaos` shape cuts to show the stack a PostgreSQL restart
without restarting the machine's PostgreSQL (others use it).

`POST /cut?seconds=N` on the control port closes every proxied connection at once (a reset,
as when the server's processes die) and stops listening for N seconds (a connection attempt is
refused, as while the server restarts); `GET /ready` answers while it runs, `GET /stats`
counts connections and cuts. Runs in its own process so that proxying costs the load
generator nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web

CHUNK = 1 << 16


class Proxy:
    def __init__(self, listen_port: int, upstream_host: str, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream = (upstream_host, upstream_port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.cuts = 0
        self.closed_by_cut = 0
        self.down_until = 0.0

    async def listen(self) -> None:
        self.server = await asyncio.start_server(
            self.handle, "127.0.0.1", self.listen_port, backlog=1024, reuse_address=True
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self.writers.discard(w)
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def cut(self, seconds: float) -> int:
        """Stop listening, reset every connection, and listen again after `seconds`."""
        self.cuts += 1
        self.down_until = time.monotonic() + seconds
        if self.server is not None:
            self.server.close()
            self.server = None
        closed = len(self.writers) // 2
        for w in list(self.writers):
            w.transport.abort()  # a reset, as when the server's process dies
        self.writers.clear()
        self.closed_by_cut += closed
        asyncio.get_running_loop().call_later(seconds, lambda: asyncio.ensure_future(self.listen()))
        return closed


async def serve(listen_port: int, control_port: int, host: str, port: int) -> None:
    proxy = Proxy(listen_port, host, port)
    await proxy.listen()

    async def cut(request: web.Request) -> web.Response:
        seconds = float(request.query.get("seconds", "10"))
        return web.json_response({"closed": await proxy.cut(seconds), "seconds": seconds})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "connections": proxy.connections,
                "open": len(proxy.writers) // 2,
                "listening": proxy.server is not None,
                "cuts": proxy.cuts,
                "closed_by_cut": proxy.closed_by_cut,
            }
        )

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post("/cut", cut)
    app.router.add_get("/stats", stats)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    await asyncio.Event().wait()  # until SIGTERM/SIGINT


def main() -> None:
    listen_port, control_port, host, port = sys.argv[1:5]
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(int(listen_port), int(control_port), host, int(port)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
