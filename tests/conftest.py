"""Suite-wide fixtures: a private PostgreSQL database and a private Redis for this test run.

Each run creates its own database (`lf_test_<random>`) and, when the `redis-server` binary exists,
starts its own Redis on a free port (so a test may FLUSHALL without touching anything else);
otherwise it uses LINKFLOW_TEST_REDIS_URL (default db 15 of the local Redis) under a unique key
prefix. Both are removed at the end. Never the database or keys that `make run` uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis as redis_sync
from databases import own_database
from processes import free_port

from infra.settings import Settings


def _wait_for_redis(url: str, deadline_s: float = 10.0) -> None:
    client = redis_sync.Redis.from_url(url)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            client.ping()
            return
        except redis_sync.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield os.environ.get("LINKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lf-test-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(redis_url: str) -> Iterator[Settings]:
    with own_database(redis_url) as settings:
        yield settings


@pytest.fixture
def fresh_settings(redis_url: str) -> Iterator[Settings]:
    """A database and key prefix of this test's own (for tests that count or flush everything)."""
    with own_database(redis_url, task_claim_idle_ms=1000) as settings:
        yield settings
