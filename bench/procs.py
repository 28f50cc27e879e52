"""Child processes of the benchmark (stack roles, the target server, the DBOS peer): spawning
with a captured log, readiness polling, max-RSS sampling and stopping. Imported by the other
`bench` modules only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def progress(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON result lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_kb(pid: int) -> int | None:
    """The process's resident set (VmRSS, kB), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class Child:
    """One child process, named by its role in the benchmark, its output kept in a file."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    ready_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())
    cwd: Path = REPO  # `python -m` imports the code of this checkout (`--code-root`)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            list(self.argv), env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap it: it leaves whatever it held as a crash leaves it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float = 60) -> None:
        assert self.proc is not None and self.ready_url is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.tail()}")
            try:
                async with session.get(self.ready_url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout_s}s: {self.tail()}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, then SIGKILL past the timeout; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            progress(f"{self.name} ignored SIGTERM for {timeout_s}s: killing it")
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 2000) -> str:
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - chars))
        return self.log.read().decode(errors="replace")

    def error_lines(self) -> list[str]:
        """Lines of its log that report an error or a traceback (for the run's notes)."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        markers = ("Traceback", '"level": "error"', '"level": "critical"', " ERROR ")
        return [line for line in text.splitlines() if any(m in line for m in markers)]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def cpu_s(pid: int) -> float | None:
    """CPU time (user + system, seconds) the process has used, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessProbe:
    """Samples VmRSS of named processes every `interval_s` and keeps the maximum of each (MB);
    also their CPU use since the last `reset` (% of one core)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.max_kb: dict[str, int] = {}
        self.cpu_from: dict[str, float] = {}
        self.since = time.monotonic()
        self.reset()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            kb = rss_kb(pid)
            if kb is not None:
                self.max_kb[name] = max(kb, self.max_kb.get(name, 0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    def reset(self) -> None:
        self.max_kb.clear()
        self.since = time.monotonic()
        self.cpu_from = {n: s for n, pid in self.pids.items() if (s := cpu_s(pid)) is not None}

    def rss_mb(self) -> dict[str, float]:
        return {name: round(kb / 1024, 1) for name, kb in sorted(self.max_kb.items())}

    def current_rss_mb(self) -> dict[str, float]:
        """VmRSS of each process now (MB), not the maximum."""
        now = {name: rss_kb(pid) for name, pid in sorted(self.pids.items())}
        return {name: round(kb / 1024, 1) for name, kb in now.items() if kb is not None}

    def cpu_pct(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.since, 1e-6)
        used = {n: s for n, pid in self.pids.items() if (s := cpu_s(pid)) is not None}
        return {
            name: round((used[name] - self.cpu_from[name]) / elapsed * 100, 1)
            for name in sorted(used)
            if name in self.cpu_from
        }
