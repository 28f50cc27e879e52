"""A callback receiver for tests: an aiohttp server on a loopback port that answers scripted
statuses and records every request it gets (headers, raw body, when)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    answered: int


@dataclass
class Receiver:
    """Answers the scripted statuses in turn, then 200; records every request."""

    url: str
    script: list[int]
    deliveries: list[Delivery] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = len(self.deliveries)
        status = self.script[n] if n < len(self.script) else 200
        self.deliveries.append(Delivery(dict(request.headers), body, datetime.now(UTC), status))
        return web.Response(status=status)

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.answered < 300]


@asynccontextmanager
async def receiver(script: list[int] | None = None, port: int = 0) -> AsyncIterator[Receiver]:
    rec = Receiver("", script or [])
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{bound}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()
