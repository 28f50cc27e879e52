"""The LinkFlow stack under test, started as `make run` starts it but on a database and Redis
prefix of its own, in one of two layouts: `all` (one `linkflow run all` process, plus optional
extra workers) or `split` (one process per role, N gateways on distinct ports, M workers).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import REPO, Child, free_port, progress, python_module
from gateways.cli import ROLE_CHOICES
from gateways.roles import ROLES
from infra.schema import drop_database, migrate
from infra.settings import Settings
from infra.streams import redis_client

# One process each in the split layout: every role but the scaled ones that `linkflow run` takes.
SINGLE_ROLES = [r for r in ROLES if r in ROLE_CHOICES and r not in ("gateway", "worker")]


@dataclass(frozen=True)
class Layout:
    name: str  # "all" | "split" | "gateway" (one gateway process alone: --gateway-only)
    gateways: int = 1
    workers: int = 0

    def processes(self) -> list[tuple[str, str]]:
        """(process name, linkflow role) of every process of the layout."""
        if self.name == "all":
            return [("all", "all")] + [(f"worker-{i + 1}", "worker") for i in range(self.workers)]
        gateways = [(f"gateway-{i + 1}", "gateway") for i in range(self.gateways)]
        if self.name == "gateway":
            return gateways
        workers = [(f"worker-{i + 1}", "worker") for i in range(self.workers)]
        return gateways + [(role, role) for role in SINGLE_ROLES] + workers

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gateways": 1 if self.name == "all" else self.gateways,
            "workers": self.workers + (1 if self.name == "all" else 0),
            "processes": [name for name, _ in self.processes()],
        }


CHECKPOINT_S = 1.0


def bench_settings() -> Settings:
    """Settings of this run: a database and Redis prefix nobody else uses."""
    tag = uuid.uuid4().hex[:8]
    return Settings(pg_db=f"lf_bench_{tag}", redis_prefix=f"lfbench:{tag}:")


class Stack:
    """The processes of one layout; `gateways` are the base URLs the client spreads over,
    `ops[name]` the base URL of each process's `/health`, `/ready` and `/metrics`.

    `env` adds `LINKFLOW_*` settings for every process (it wins over `settings`: the `chaos`
    shape points the processes at its PostgreSQL proxy while the harness reads PostgreSQL
    directly); `code_root` is the checkout whose code the processes run (default: this one)."""

    def __init__(
        self,
        settings: Settings,
        layout: Layout,
        env: dict[str, str] | None = None,
        code_root: Path = REPO,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.code_root = code_root
        self.children: list[Child] = []
        self.gateways: list[str] = []
        self.ops: dict[str, str] = {}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LINKFLOW_")}
        base_env.update(
            settings.process_env(),
            LINKFLOW_ALLOW_PRIVATE_NETWORK="1",
            LINKFLOW_LOG_LEVEL="WARNING",
            # The audit role signs the chain heads that moved every second (default 60 s),
            # so the benchmark's checkpoint lag shows the chain keeping up, not the period.
            LINKFLOW_AUDIT_CHECKPOINT_S=str(CHECKPOINT_S),
        )
        base_env.update(env or {})
        self.env = base_env
        for name, role in layout.processes():
            port = free_port()
            env = dict(base_env)
            if role in ("all", "gateway"):
                env["LINKFLOW_HTTP_PORT"] = str(port)
                self.gateways.append(f"http://127.0.0.1:{port}")
            else:
                env["LINKFLOW_METRICS_PORT"] = str(port)
            self.ops[name] = f"http://127.0.0.1:{port}"
            argv = python_module("gateways.cli", "run", role)
            child = Child(name, argv, env, f"http://127.0.0.1:{port}/ready", cwd=code_root)
            self.children.append(child)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    async def start(self, session: aiohttp.ClientSession) -> None:
        if self.code_root == REPO:
            migrate(self.settings)
        else:  # that checkout's schema
            argv = python_module("gateways.cli", "migrate")
            done = await asyncio.create_subprocess_exec(  # its output is progress: stderr
                *argv, env=self.env, cwd=self.code_root, stdout=sys.stderr
            )
            if await done.wait() != 0:
                raise RuntimeError(f"migrate failed in {self.code_root}")
        for child in self.children:
            child.start()
        for child in self.children:
            await child.wait_ready(session)
        progress(f"stack up: layout {self.layout.describe()}")

    def pids(self) -> dict[str, int]:
        return {child.name: child.pid for child in self.children if child.proc is not None}

    def stop(self) -> list[str]:
        """Stop every process; returns the error lines their logs hold (for the report)."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        errors: list[str] = []
        for child in self.children:
            child.stop()
            errors += [f"{child.name}: {line[:300]}" for line in child.error_lines()]
        return errors

    def save_logs(self, directory: Path) -> None:
        """Write each process's output to `directory`/<name>.log (`--logs`)."""
        directory.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            child.log.seek(0)
            (directory / f"{child.name}.log").write_bytes(child.log.read())

    async def forget(self) -> None:
        """Drop the database and delete the Redis keys under this run's prefix."""
        drop_database(self.settings)
        client = redis_client(self.settings)
        try:
            async for key in client.scan_iter(match=f"{self.settings.redis_prefix}*"):
                await client.delete(key)
        finally:
            await client.aclose()
