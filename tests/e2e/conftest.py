"""The whole stack as `make run` starts it (`linkflow run all`), on this run's own database."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from api import Api, signed_up
from databases import own_database
from loop_guard import no_socket_left_registered  # noqa: F401 (an autouse fixture)
from processes import Process, free_port, stack_env
from target import serve_target

from infra.settings import Settings


@pytest.fixture(scope="module")
def e2e_settings(redis_url: str) -> Iterator[Settings]:
    with own_database(redis_url) as settings:
        yield settings


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    """More `LINKFLOW_*` variables for the stack; a test module may override this fixture."""
    return {}


@pytest.fixture(scope="module")
def stack(e2e_settings: Settings, stack_extra_env: dict[str, str]) -> Iterator[tuple[str, Process]]:
    port = free_port()
    env = stack_env(
        e2e_settings,
        LINKFLOW_HTTP_PORT=str(port),
        LINKFLOW_MAX_BODY_BYTES="65536",
        **stack_extra_env,
    )
    proc = Process("all", env, f"http://127.0.0.1:{port}/ready")
    try:
        proc.start()
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.proc is not None:
            code = proc.stop(signal.SIGTERM)
            assert code == 0, proc.output()[-4000:]


@pytest.fixture
async def api(stack: tuple[str, Process]) -> AsyncIterator[Api]:
    async with signed_up(stack[0]) as client:
        yield client


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[str]:
    async with serve_target() as base:
        yield base
