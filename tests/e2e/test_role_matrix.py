"""The role matrix, route by route: every API route × every kind of caller — the four roles as
users and as API keys, a stranger (a user of another workspace), an API key of another workspace,
no token, an expired token, a tampered token and a revoked API key — each gets the exact status
written here. The expectations are this file's own table (docs/permissions.md), not the code's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from api import Api, Reply, signed_up

from gateways.http.app import api_routes
from gateways.http.tokens import issue_access_token

RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
# The auditor is outside the rank: it reads what a viewer reads, plus the audit routes (whose
# least role is written "auditor": owners, admins and auditors read them).
AUDITOR = "auditor"
ROLES = (*RANK, AUDITOR)
WORKFLOW = {"name": "m", "nodes": [{"id": "a", "type": "transform", "config": {"set": {"x": 1}}}]}
# An execution that waits: for a signal, and for an approval anyone but the auditor may give.
WAITING = {
    "name": "waits",
    "nodes": [
        {"id": "w", "type": "wait_for_signal", "config": {"signal": "go"}},
        {
            "id": "ok",
            "type": "approval",
            "config": {
                "approvers": {"roles": ["owner", "admin", "member", "viewer"]},
                "allow_self_approval": True,
            },
        },
    ],
}


@dataclass
class Caller:
    name: str
    token: str
    role: str | None = None  # a role in the route's workspace
    is_key: bool = False
    outcome: str = "role"  # "role" | "401" | "404"


@dataclass
class Workspace:
    """A fresh workspace for one route: the four roles as users (shared) and as API keys."""

    id: str
    owner: Api
    keys: dict[str, str]
    position: int


class World:
    def __init__(self, base: str, users: dict[str, Api], stranger: Api) -> None:
        self.base, self.users, self.stranger = base, users, stranger

    async def workspace(self) -> Workspace:
        owner = self.users["owner"]
        made = await owner.call("POST", "workspaces", json={"name": f"ws-{uuid.uuid4().hex[:6]}"})
        assert made.status == 201, made.body
        ws = made.body["id"]
        for role in ("admin", "member", "viewer", AUDITOR):
            email = (await self.users[role].call("GET", "me")).body["user"]["email"]
            added = await owner.call(
                "POST", f"workspaces/{ws}/members", json={"email": email, "role": role}
            )
            assert added.status == 201, added.body
        keys, position = {}, 0
        for role in ROLES:
            key = await owner.call(
                "POST", f"workspaces/{ws}/api-keys", json={"name": role, "role": role}
            )
            assert key.status == 201, key.body
            keys[role], position = key.body["key"], key.body["position"]
        return Workspace(ws, owner, keys, position)

    async def callers(self, ws: Workspace, e2e_settings: Any) -> list[Caller]:
        callers = [Caller(f"user:{r}", self.users[r].token or "", r) for r in ROLES]
        callers += [Caller(f"key:{r}", ws.keys[r], r, is_key=True) for r in ROLES]
        stranger_key = await self.stranger.call(
            "POST", self.stranger.ws("/api-keys"), json={"name": "x", "role": "owner"}
        )
        revoked = await ws.owner.call(
            "POST", f"workspaces/{ws.id}/api-keys", json={"name": "gone", "role": "owner"}
        )
        gone = await ws.owner.call("DELETE", f"workspaces/{ws.id}/api-keys/{revoked.body['id']}")
        assert gone.status == 204
        owner_id = uuid.UUID((await ws.owner.call("GET", "me")).body["user"]["id"])
        expired, _ = issue_access_token(e2e_settings, owner_id, now=time.time() - 7200)
        good = self.users["owner"].token or ""
        head, payload, signature = good.split(".")
        tampered = ".".join([head, payload, signature[::-1]])
        return callers + [
            Caller("stranger", self.stranger.token or "", outcome="404"),
            Caller("stranger-key", stranger_key.body["key"], is_key=True, outcome="404"),
            Caller("no-token", "", outcome="401"),
            Caller("expired", expired, outcome="401"),
            Caller("tampered", tampered, outcome="401"),
            Caller("revoked-key", revoked.body["key"], is_key=True, outcome="401"),
        ]


# What a route needs: given the workspace (and the caller's name, for fresh targets), the
# concrete path (relative to /api/v1) and the JSON body.
Prepare = Callable[[World, Workspace, str], Awaitable[tuple[str, Any]]]


async def _workflow(
    world: World, ws: Workspace, definition: dict[str, Any] = WORKFLOW
) -> dict[str, Any]:
    made = await ws.owner.call("POST", f"workspaces/{ws.id}/workflows", json=definition)
    assert made.status == 201, made.body
    return made.body


async def _execution(world: World, ws: Workspace, waiting: bool = False) -> dict[str, Any]:
    wf = await _workflow(world, ws, WAITING if waiting else WORKFLOW)
    started = await ws.owner.call(
        "POST", f"workspaces/{ws.id}/workflows/{wf['id']}/executions", json={"input": {}}
    )
    assert started.status == 202, started.body
    return started.body


async def _new_user_member(world: World, ws: Workspace) -> str:
    async with signed_up(world.base) as someone:
        me = (await someone.call("GET", "me")).body["user"]
    added = await ws.owner.call(
        "POST", f"workspaces/{ws.id}/members", json={"email": me["email"], "role": "viewer"}
    )
    assert added.status == 201
    return me["id"]


def static(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        return path.format(ws=ws.id, pos=ws.position), body

    return prepare


def with_workflow(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        wf = await _workflow(world, ws)
        return path.format(ws=ws.id, wf=wf["id"], pos=wf["position"]), body

    return prepare


def with_execution(path: str, body: Any = None, waiting: bool = False) -> Prepare:
    """A new execution per caller (`waiting`: one of WAITING, which waits)."""

    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        ex = await _execution(world, ws, waiting)
        return path.format(ws=ws.id, id=ex["execution_id"], pos=ex["position"]), body

    return prepare


def with_member(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        return path.format(ws=ws.id, user_id=await _new_user_member(world, ws)), body

    return prepare


async def _add_member(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
    async with signed_up(world.base) as someone:
        email = (await someone.call("GET", "me")).body["user"]["email"]
    return f"workspaces/{ws.id}/members", {"email": email, "role": "viewer"}


def with_credential(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        made = await ws.owner.call(
            "POST",
            f"workspaces/{ws.id}/credentials",
            json={"name": f"c{uuid.uuid4().hex[:8]}", "type": "api", "data": {"token": "t0ken"}},
        )
        assert made.status == 201, made.body
        return path.format(ws=ws.id, cred=made.body["id"], pos=made.body["position"]), body

    return prepare


def with_variable(path: str, body: Any = None) -> Prepare:
    async def prepare(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
        name = f"v{uuid.uuid4().hex[:8]}"
        made = await ws.owner.call("PUT", f"workspaces/{ws.id}/variables/{name}", json={"value": 1})
        assert made.status == 200, made.body
        return path.format(ws=ws.id, name=name), body

    return prepare


async def _new_credential(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
    name = who.replace(":", "_")  # one name per caller: a repeat would be 409
    return f"workspaces/{ws.id}/credentials", {"name": name, "type": "api", "data": {"k": "v"}}


async def _revoke_key(world: World, ws: Workspace, who: str) -> tuple[str, Any]:
    key = await ws.owner.call(
        "POST", f"workspaces/{ws.id}/api-keys", json={"name": "victim", "role": "viewer"}
    )
    return f"workspaces/{ws.id}/api-keys/{key.body['id']}", None


# (method, route path) -> (least role allowed, success status, prepare)
WS = "workspaces/{ws}"
MATRIX: dict[tuple[str, str], tuple[str, int, Prepare]] = {
    ("GET", "/members"): ("viewer", 200, static(WS + "/members")),
    ("POST", "/members"): ("admin", 201, _add_member),
    ("PATCH", "/members/{user_id}"): (
        "admin",
        200,
        with_member(WS + "/members/{user_id}", {"role": "member"}),
    ),
    ("DELETE", "/members/{user_id}"): ("admin", 204, with_member(WS + "/members/{user_id}")),
    ("POST", "/api-keys"): (
        "admin",
        201,
        static(WS + "/api-keys", {"name": "k", "role": "viewer"}),
    ),
    ("GET", "/api-keys"): ("admin", 200, static(WS + "/api-keys?min_position={pos}")),
    ("DELETE", "/api-keys/{key_id}"): ("admin", 204, _revoke_key),
    ("GET", "/signing-secret"): ("admin", 200, static(WS + "/signing-secret")),
    ("POST", "/credentials"): ("member", 201, _new_credential),
    ("GET", "/credentials"): ("viewer", 200, static(WS + "/credentials")),
    ("GET", "/credentials/{credential_id}"): (
        "viewer",
        200,
        with_credential(WS + "/credentials/{cred}?min_position={pos}"),
    ),
    ("PUT", "/credentials/{credential_id}"): (
        "member",
        200,
        with_credential(WS + "/credentials/{cred}", {"data": {"k": "w"}}),
    ),
    ("DELETE", "/credentials/{credential_id}"): (
        "member",
        204,
        with_credential(WS + "/credentials/{cred}"),
    ),
    ("GET", "/variables"): ("viewer", 200, static(WS + "/variables")),
    ("PUT", "/variables/{name}"): (
        "member",
        200,
        with_variable(WS + "/variables/{name}", {"value": "x"}),
    ),
    ("DELETE", "/variables/{name}"): ("member", 204, with_variable(WS + "/variables/{name}")),
    ("POST", "/workflows"): ("member", 201, static(WS + "/workflows", WORKFLOW)),
    ("GET", "/workflows"): ("viewer", 200, static(WS + "/workflows")),
    ("GET", "/workflows/{wf}"): (
        "viewer",
        200,
        with_workflow(WS + "/workflows/{wf}?min_position={pos}"),
    ),
    ("PUT", "/workflows/{wf}"): ("member", 200, with_workflow(WS + "/workflows/{wf}", WORKFLOW)),
    ("DELETE", "/workflows/{wf}"): ("member", 200, with_workflow(WS + "/workflows/{wf}")),
    ("GET", "/workflows/{wf}/versions"): (
        "viewer",
        200,
        with_workflow(WS + "/workflows/{wf}/versions?min_position={pos}"),
    ),
    ("GET", "/workflows/{wf}/versions/{n}"): (
        "viewer",
        200,
        with_workflow(WS + "/workflows/{wf}/versions/1?min_position={pos}"),
    ),
    ("POST", "/workflows/{wf}/activate"): (
        "member",
        200,
        with_workflow(WS + "/workflows/{wf}/activate"),
    ),
    ("POST", "/workflows/{wf}/deactivate"): (
        "member",
        200,
        with_workflow(WS + "/workflows/{wf}/deactivate"),
    ),
    ("POST", "/workflows/{wf}/executions"): (
        "member",
        202,
        with_workflow(WS + "/workflows/{wf}/executions", {"input": {}}),
    ),
    ("GET", "/executions"): ("viewer", 200, static(WS + "/executions")),
    ("GET", "/executions/count"): ("viewer", 200, static(WS + "/executions/count")),
    ("GET", "/executions/stats"): ("viewer", 200, static(WS + "/executions/stats")),
    ("GET", "/workflows/stats"): ("viewer", 200, static(WS + "/workflows/stats")),
    ("GET", "/executions/{id}"): (
        "viewer",
        200,
        with_execution(WS + "/executions/{id}?min_position={pos}"),
    ),
    ("GET", "/executions/{id}/history"): (
        "viewer",
        200,
        with_execution(WS + "/executions/{id}/history"),
    ),
    ("POST", "/executions/{id}/cancel"): (
        "member",
        202,
        with_execution(WS + "/executions/{id}/cancel"),
    ),
    ("POST", "/executions/{id}/signals/{name}"): (
        "member",
        202,
        with_execution(WS + "/executions/{id}/signals/go", {"payload": 1}, waiting=True),
    ),
    ("POST", "/executions/{id}/approvals/{node}"): (
        "viewer",
        202,
        with_execution(WS + "/executions/{id}/approvals/ok", {"decision": "approve"}, True),
    ),
    ("POST", "/executions/{id}/rerun"): (
        "member",
        202,
        with_execution(WS + "/executions/{id}/rerun"),
    ),
    ("POST", "/executions/rerun"): (
        "member",
        202,
        static(WS + "/executions/rerun", {"q": "status = 'canceled'"}),
    ),
    ("GET", "/executions/{id}/events"): (
        "viewer",
        200,
        with_execution(WS + "/executions/{id}/events"),
    ),
    ("GET", "/executions/live"): ("viewer", 200, static(WS + "/executions/live")),
    ("GET", "/executions/export"): ("viewer", 200, static(WS + "/executions/export")),
    ("GET", "/events"): (AUDITOR, 200, static(WS + "/events")),
    ("GET", "/executions/{id}/state"): (
        AUDITOR,
        200,
        with_execution(WS + "/executions/{id}/state"),
    ),
    ("GET", "/workflows/{wf}/state"): (AUDITOR, 200, with_workflow(WS + "/workflows/{wf}/state")),
    ("GET", "/audit/checkpoints"): (AUDITOR, 200, static(WS + "/audit/checkpoints")),
}
# Server-Sent Events and exports: a success is a stream (the live feed never ends; an export is
# NDJSON), so only its status is read; an error is an ordinary JSON answer.
STREAMS = {
    ("GET", "/executions/{id}/events"),
    ("GET", "/executions/live"),
    ("GET", "/executions/export"),
}
# Routes open to viewers that change something: the auditor, who changes nothing, gets 403.
CHANGES = {("POST", "/executions/{id}/approvals/{node}")}
# Destructive for the whole workspace: each caller gets a workspace of its own.
DELETE_WORKSPACE = ("DELETE", "")
# Routes outside a workspace.
USER_ROUTES = {("GET", "/me"), ("GET", "/workspaces"), ("POST", "/workspaces")}
PUBLIC_ROUTES = {
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("GET", "/audit/keys"),  # the public keys that sign audit checkpoints
    # A signal URL's token is its authority (tests/integration/test_signals.py).
    ("POST", "/signals/{token}"),
    # Webhooks authenticate their callers themselves (tests/e2e/test_webhooks.py).
    *((method, "/hooks/{token}") for method in ("GET", "POST", "PUT", "PATCH", "DELETE")),
}


def _key(method: str, path: str) -> tuple[str, str]:
    path = path.removeprefix("/api/v1")
    return method, path.removeprefix("/workspaces/{ws}") if path.startswith(
        "/workspaces/{ws}"
    ) else path


def test_every_route_is_in_the_matrix() -> None:
    routes = {_key(r.method, r.path) for r in api_routes()}
    covered = set(MATRIX) | {DELETE_WORKSPACE} | USER_ROUTES | PUBLIC_ROUTES
    assert routes == covered, {"missing": routes - covered, "stale": covered - routes}


def expected(caller: Caller, least: str, success: int, route: tuple[str, str] | None = None) -> int:
    if caller.outcome != "role":
        return int(caller.outcome)
    assert caller.role is not None
    if caller.role == AUDITOR:
        return success if least in ("viewer", AUDITOR) and route not in CHANGES else 403
    if least == AUDITOR:
        return success if caller.role in ("owner", "admin") else 403
    return success if RANK[caller.role] >= RANK[least] else 403


@pytest.fixture(scope="module")
async def world(stack: tuple[str, Any]) -> Any:
    import contextlib

    async with contextlib.AsyncExitStack() as exits:
        users = {r: await exits.enter_async_context(signed_up(stack[0])) for r in ROLES}
        stranger = await exits.enter_async_context(signed_up(stack[0]))
        yield World(stack[0], users, stranger)


@pytest.mark.parametrize("route", list(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
async def test_workspace_route(route: tuple[str, str], world: World, e2e_settings: Any) -> None:
    least, success, prepare = MATRIX[route]
    ws = await world.workspace()
    failures = []
    for caller in await world.callers(ws, e2e_settings):
        path, body = await prepare(world, ws, caller.name)
        if route in STREAMS:
            reply = await _stream_status(world.stranger, path, caller.token)
        else:
            reply = await world.stranger.call(route[0], path, json=body, token=caller.token)
        want = expected(caller, least, success, route)
        if reply.status != want:
            failures.append((caller.name, want, reply.status, reply.body))
        elif want >= 400:
            assert "error" in reply.body, reply.body
    assert not failures, failures


async def _stream_status(api: Api, path: str, token: str) -> Reply:
    """GET an SSE route: the status, and the body of an error (a stream is not read)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with api.session.get(f"{api.base}/api/v1/{path}", headers=headers) as resp:
        body = await resp.json() if resp.status >= 400 else None
        return Reply(resp.status, body, resp.headers)


async def test_delete_workspace(world: World, e2e_settings: Any) -> None:
    failures = []
    for name in [c.name for c in await world.callers(await world.workspace(), e2e_settings)]:
        ws = await world.workspace()
        caller = next(c for c in await world.callers(ws, e2e_settings) if c.name == name)
        reply = await world.stranger.call("DELETE", f"workspaces/{ws.id}", token=caller.token)
        want = expected(caller, "owner", 204)
        if reply.status != want:
            failures.append((name, want, reply.status, reply.body))
    assert not failures, failures


@pytest.mark.parametrize("route", sorted(USER_ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_user_route(route: tuple[str, str], world: World, e2e_settings: Any) -> None:
    """Routes about the calling person: any user, but not an API key (403) and not anonymous."""
    ws = await world.workspace()
    failures = []
    for caller in await world.callers(ws, e2e_settings):
        body = {"name": "mine"} if route[0] == "POST" else None
        reply = await world.stranger.call(
            route[0], route[1].lstrip("/"), json=body, token=caller.token
        )
        if caller.outcome == "401":
            want = 401
        elif caller.is_key:
            want = 403
        else:
            want = 201 if route[0] == "POST" else 200
        if reply.status != want:
            failures.append((caller.name, want, reply.status, reply.body))
    assert not failures, failures
