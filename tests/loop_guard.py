"""A check of the test session's event loop: no socket number stays registered in it after its
socket closed. A task that waits on a connection's socket while another closes the connection
leaves such a registration behind (`infra.db.cancel_and_wait`), and the next socket given the
same number fails to connect in whatever test comes next. The integration and e2e conftests
import `no_socket_left_registered`, which checks after every test, so the test that leaks
fails, not a later one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


def stale_registrations(loop: asyncio.AbstractEventLoop) -> list[str]:
    """The loop's registrations whose socket is no longer in its epoll set (closed), each as
    `fd=N reader=… writer=…`; empty where the loop has no epoll selector (not Linux)."""
    selector = getattr(loop, "_selector", None)
    info = Path(f"/proc/self/fdinfo/{selector.fileno()}") if selector is not None else None
    if info is None or not hasattr(selector, "get_map"):
        return []
    try:
        watched = {int(fd) for fd in re.findall(r"tfd:\s+(\d+)", info.read_text())}
    except OSError:
        return []
    return [
        f"fd={fd} reader={key.data[0]!r} writer={key.data[1]!r}"
        for fd, key in list(selector.get_map().items())
        if fd not in watched
    ]


@pytest.fixture(autouse=True)
async def no_socket_left_registered() -> AsyncIterator[None]:
    """After each test (its other fixtures torn down first): no closed socket is still
    registered in the session's event loop."""
    yield
    stale = stale_registrations(asyncio.get_running_loop())
    assert not stale, f"sockets closed while still registered in the event loop: {stale}"
