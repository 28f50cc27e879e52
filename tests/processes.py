"""Run `linkflow` as real processes (the way the README starts it) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from infra.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `linkflow` process that talks to this run's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKFLOW_")}
    env.update(
        settings.process_env(),
        LINKFLOW_ALLOW_PRIVATE_NETWORK="1",
        LINKFLOW_TASK_CLAIM_IDLE_MS=str(settings.task_claim_idle_ms),
        LINKFLOW_LOG_LEVEL="INFO",
        **extra,
    )
    return env


def wait_http_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.1)


@dataclass
class Process:
    """One `linkflow run <role>` process with its log captured to a file."""

    role: str
    env: dict[str, str]
    health_url: str
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())

    def start(self, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateways.cli", "run", self.role],
            env=self.env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            try:
                wait_http_ok(self.health_url)
            except AssertionError:
                self.stop(signal.SIGKILL)
                raise AssertionError(
                    f"{self.role} did not start:\n{self.output()[-3000:]}"
                ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; a process that did not stop in time is killed
        (and the assertion on its exit code then fails)."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -signal.SIGKILL

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")
