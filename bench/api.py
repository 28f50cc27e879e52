"""The few LinkFlow API calls the benchmark makes besides starting executions in bulk: sign up a
user with a workspace, create a workflow, and one start whose whole outcome is kept (status,
execution id, Retry-After) for the fault shapes. Imported by the other `bench` modules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp


async def sign_up(session: aiohttp.ClientSession, api: str) -> tuple[str, dict[str, str]]:
    """A fresh user and workspace: (workspace id, Authorization header)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    user = {"email": email, "password": "benchmark!", "name": "Bench"}
    async with session.post(f"{api}/auth/register", json=user) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        workspace = body["workspace"]["id"]
    login = {"email": email, "password": "benchmark!"}
    async with session.post(f"{api}/auth/login", json=login) as resp:
        token = (await resp.json())["access_token"]
    return workspace, {"Authorization": f"Bearer {token}"}


async def create_workflow(
    session: aiohttp.ClientSession, api: str, ws: str, headers: dict[str, str], body: Any
) -> str:
    async with session.post(f"{api}/workspaces/{ws}/workflows", json=body, headers=headers) as r:
        answer = await r.json()
        assert r.status == 201, answer
        return str(answer["id"])


@dataclass
class Outcome:
    status: int  # the HTTP status; 0: no answer (connection error, timeout)
    execution_id: str | None
    retry_after_s: float | None
    error: str | None  # the error code of a refusal, or the exception's type


async def start_once(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    payload: Any,
    idempotency_key: str | None = None,
) -> Outcome:
    """One start request; never raises for what the server or the network answers."""
    if idempotency_key is not None:
        headers = {**headers, "Idempotency-Key": idempotency_key}
    try:
        async with session.post(url, json=payload, headers=headers) as resp:
            retry = resp.headers.get("Retry-After")
            retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            if resp.status == 202 and isinstance(body, dict):
                return Outcome(202, str(body["execution_id"]), None, None)
            code = None
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                code = body["error"].get("code")
            return Outcome(resp.status, None, retry_after, code)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(0, None, None, type(exc).__name__)
