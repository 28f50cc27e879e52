"""A small client of LinkFlow's HTTP API for end-to-end tests (aiohttp, real HTTP)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

TERMINAL = {"completed", "failed", "canceled", "timed_out"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.token: str | None = None
        self.workspace: str | None = None

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        **params: Any,
    ) -> Reply:
        hdrs = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        url = self.base + path if path.startswith("/") else f"{self.base}/api/v1/{path}"
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self.session.request(
            method, url, json=json, data=data, headers=hdrs, params=query
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = await resp.text()
            return Reply(resp.status, body, resp.headers)

    async def sign_up(self) -> str:
        """Register a new user, log in, remember the token and personal workspace."""
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        reg = await self.call(
            "POST", "auth/register", json={"email": email, "password": "correct horse", "name": "E"}
        )
        assert reg.status == 201, reg.body
        login = await self.call(
            "POST", "auth/login", json={"email": email, "password": "correct horse"}
        )
        assert login.status == 200, login.body
        self.token = login.body["access_token"]
        self.workspace = reg.body["workspace"]["id"]
        return email

    def ws(self, rest: str = "") -> str:
        return f"workspaces/{self.workspace}{rest}"

    async def create_workflow(self, definition: dict[str, Any]) -> dict[str, Any]:
        reply = await self.call("POST", self.ws("/workflows"), json=definition)
        assert reply.status == 201, reply.body
        return reply.body

    async def start(self, workflow_id: str, input: Any, **extra: Any) -> dict[str, Any]:
        reply = await self.call(
            "POST", self.ws(f"/workflows/{workflow_id}/executions"), json={"input": input, **extra}
        )
        assert reply.status == 202, reply.body
        return reply.body

    async def wait_terminal(self, execution_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the execution (a deadline, not a sleep) until it reaches a terminal status."""
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.call("GET", self.ws(f"/executions/{execution_id}"))
            if reply.status == 200 and reply.body["status"] in TERMINAL:
                return reply.body
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_id} not terminal: {reply.body}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def signed_up(base: str) -> AsyncIterator[Api]:
    """A client with a session, a new user and that user's personal workspace."""
    async with aiohttp.ClientSession() as session:
        client = Api(base, session)
        await client.sign_up()
        yield client
