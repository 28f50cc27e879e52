"""A small Server-Sent Events client for tests of the SSE routes: opens a stream over aiohttp and
yields its events (`id`, `event`, parsed `data`) and comment lines, as a browser's EventSource
would parse them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: Any


@dataclass
class Comment:
    text: str


class SseStream:
    """An open `text/event-stream` response, read item by item."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._items = self._parse()

    async def _parse(self) -> AsyncIterator[SseEvent | Comment]:
        fields: dict[str, str] = {}
        data: list[str] = []
        async for raw in self.response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                yield Comment(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
            elif data or fields:
                yield SseEvent(
                    fields.get("id"), fields.get("event", "message"), json.loads("\n".join(data))
                )
                fields, data = {}, []

    async def next(self, timeout: float = 20.0) -> SseEvent | Comment | None:
        """The next event or comment; None once the server ended the stream."""
        try:
            return await asyncio.wait_for(anext(self._items), timeout)
        except StopAsyncIteration:
            return None

    async def opened(self) -> None:
        """Wait for the stream's first comment (the server has registered this client)."""
        first = await self.next()
        assert isinstance(first, Comment), first

    async def events(self, count: int | None = None, timeout: float = 20.0) -> list[SseEvent]:
        """The next `count` events (comments skipped), or every event until the stream ends."""
        got: list[SseEvent] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while count is None or len(got) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"{len(got)} events within {timeout}s, wanted {count}")
            item = await self.next(left)
            if item is None:
                if count is not None:
                    raise AssertionError(f"the stream ended after {len(got)} of {count} events")
                return got
            if isinstance(item, SseEvent):
                got.append(item)
        return got


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    token: str | None = None,
    last_event_id: str | None = None,
    **params: str,
) -> AsyncIterator[SseStream]:
    """GET `url` as an SSE client (`Authorization: Bearer token` when given)."""
    headers = {"Accept": "text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with session.get(url, headers=headers, params=params) as response:
        yield SseStream(response)
