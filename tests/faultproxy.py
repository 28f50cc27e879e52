"""A TCP proxy for fault tests: put it between LinkFlow and PostgreSQL (or Redis), then `cut()` to
simulate an outage and `restore()` to end it.

The proxy runs its own event loop in a background thread, so it keeps forwarding while the test
blocks (starting a process, `time.sleep`-free polling in another loop, ...), and it can be used
from synchronous and asynchronous tests alike:

    with FaultProxy("127.0.0.1", 5432) as proxy:   # listens on 127.0.0.1:<proxy.port>
        ...                                          # point LINKFLOW_PG_PORT at proxy.port
        proxy.cut()        # every open connection is closed, new ones are refused
        proxy.restore()    # accepted and forwarded again

`cut(hang=True)` makes new connections hang instead of being refused (accepted, never answered:
what connect timeouts are for); `cut(freeze=True)` is a network partition: open connections stay
open but nothing passes any more, and new ones hang. `restore()` closes whatever a cut held.
Imported by tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.mode = "open"  # "open" (forwarding), "refuse" or "hang" (cut)
        self.accepted = 0  # connections accepted and forwarded so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing: asyncio.Event | None = None  # cleared while frozen (on the loop)

    # ------------------------------------------------------------ the API (any thread)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen)
        return self

    def cut(self, hang: bool = False, freeze: bool = False) -> None:
        """Until `restore()`: close every open connection and refuse new ones; with `hang`,
        accept new ones and never answer them; with `freeze`, also keep open connections open
        but pass nothing through them."""
        self._call(lambda: self._cut(hang or freeze, freeze))

    def restore(self) -> None:
        """Accept and forward connections again."""
        self._call(self._restore)

    @property
    def open_connections(self) -> int:
        """Client connections currently forwarded (each with its upstream connection)."""
        return len(self._writers) // 2

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[[], object]) -> None:
        """Run `fn` (a coroutine function or a plain one) on the proxy's loop and wait for it."""

        async def run() -> None:
            result = fn()
            if asyncio.iscoroutine(result):
                await result

        future: Future[None] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        future.result(timeout=10)

    # ------------------------------------------------------------ on the proxy's loop

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _cut(self, hang: bool, freeze: bool) -> None:
        self.mode = "hang" if hang else "refuse"
        if not hang and self._server is not None:
            self._server.close()  # the port refuses connections, like a stopped server
            await self._server.wait_closed()
            self._server = None
        if freeze:
            assert self._flowing is not None
            self._flowing.clear()  # open connections stay, silent
        else:
            self._drop_all()

    async def _restore(self) -> None:
        self._drop_all()  # connections a "hang" or "freeze" cut held: close them
        assert self._flowing is not None
        self._flowing.set()
        self.mode = "open"
        if self._server is None:
            await self._listen()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "hang":
            self._writers.add(writer)  # held, never answered, closed by restore()
            return
        if self.mode != "open":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self.mode != "open":  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await source.read(CHUNK):
                await self._flowing.wait()  # frozen: held until restore() drops the pair
                sink.write(chunk)
                await sink.drain()
        for writer in pair:  # one side ended: end both (a proxy has no half-open pairs)
            self._writers.discard(writer)
            writer.transport.abort()
