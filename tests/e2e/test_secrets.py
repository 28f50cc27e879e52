"""Credentials and workspace variables over HTTP against `linkflow run all`: the credentials API
(data never answered, duplicates, bad input, tenancy, roles), variables read by executions, and
the secret-leak test: a credential really reaches the target an `http_request` node calls, while
its plaintext appears nowhere else — not in the event store, Redis, the processes' logs or any
API answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from api import Api, Reply, signed_up
from processes import Process
from psycopg import sql
from redis.asyncio import Redis
from stack import eventually

from commands.identity import AddMember
from gateways.bootstrap import bootstrap
from infra.db import open_pool
from infra.settings import Settings

Stack = tuple[str, Process]


class RecordingApi(Api):
    """An Api that keeps every answer it received (for the leak search)."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        super().__init__(base, session)
        self.answers: list[str] = []

    async def call(self, method: str, path: str, *args: Any, **kwargs: Any) -> Reply:
        reply = await super().call(method, path, *args, **kwargs)
        self.answers.append(json.dumps(reply.body) + json.dumps(dict(reply.headers)))
        return reply


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[RecordingApi]:
    async with aiohttp.ClientSession() as session:
        api = RecordingApi(stack[0], session)
        await api.sign_up()
        yield api


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def create_credential(api: Api, name: str, data: dict[str, Any]) -> Reply:
    return await api.call(
        "POST", api.ws("/credentials"), json={"name": name, "type": "api_token", "data": data}
    )


def error_paths(reply: Reply) -> list[str]:
    return [d["path"] for d in reply.body["error"]["details"]]


# ---------------------------------------------------------------- the credentials API


async def test_create_answers_metadata_and_never_the_data(client: RecordingApi) -> None:
    name = unique("api")
    created = await create_credential(client, name, {"token": "t-1", "user": "u-1"})
    assert created.status == 201, created.body
    assert set(created.body) == {
        "id", "name", "type", "fields", "created_at", "updated_at", "position"
    }  # fmt: skip
    assert (created.body["name"], created.body["fields"]) == (name, ["token", "user"])
    cid, position = created.body["id"], created.body["position"]

    listed = await client.call("GET", client.ws("/credentials"), min_position=position)
    assert [c["id"] for c in listed.body] == [cid]
    one = await client.call("GET", client.ws(f"/credentials/{cid}"), min_position=position)
    assert one.body == {k: v for k, v in created.body.items() if k != "position"}

    updated = await client.call(
        "PUT", client.ws(f"/credentials/{cid}"), json={"data": {"token": "t-2"}}
    )
    assert updated.status == 200, updated.body
    assert (updated.body["type"], updated.body["fields"]) == ("api_token", ["token"])
    again = await client.call(
        "GET", client.ws(f"/credentials/{cid}"), min_position=updated.body["position"]
    )
    assert again.body["fields"] == ["token"]
    assert not any(
        secret in answer for answer in client.answers for secret in ("t-1", "t-2", "u-1")
    )


async def test_a_duplicate_name_is_409_credential_exists(client: RecordingApi) -> None:
    name = unique("dup")
    assert (await create_credential(client, name, {"token": "a"})).status == 201
    again = await create_credential(client, name, {"token": "b"})
    assert (again.status, again.body["error"]["code"]) == (409, "credential_exists")


async def test_delete_is_204_then_404_and_the_name_can_be_reused(client: RecordingApi) -> None:
    name = unique("gone")
    cid = (await create_credential(client, name, {"token": "a"})).body["id"]
    deleted = await client.call("DELETE", client.ws(f"/credentials/{cid}"))
    assert deleted.status == 204
    assert (await client.call("DELETE", client.ws(f"/credentials/{cid}"))).status == 404

    async def gone() -> bool:  # a 204 carries no position to wait for: poll the read model
        return (await client.call("GET", client.ws(f"/credentials/{cid}"))).status == 404

    await eventually(gone, timeout=5)
    put = await client.call("PUT", client.ws(f"/credentials/{cid}"), json={"data": {"a": 1}})
    assert put.status == 404
    reused = await create_credential(client, name, {"token": "b"})
    assert (reused.status, reused.body["id"]) == (201, cid)
    listed = await client.call(
        "GET", client.ws("/credentials"), min_position=reused.body["position"]
    )
    assert [c["name"] for c in listed.body] == [name]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "has space", "data": {"token": "a"}}, "name"),
        ({"name": "x", "data": {"token": "a" * 17_000}}, "data"),
        ({"name": "x", "data": {}}, "data"),
        ({"name": "x", "data": ["token"]}, "data"),
        ({"name": "x", "data": {"not a field": "a"}}, "data.not a field"),
        ({"name": "x"}, "data"),
        ({"name": "x", "data": {"token": "a"}, "extra": 1}, "extra"),
    ],
)
async def test_invalid_credentials_are_422_naming_the_field(
    client: RecordingApi, body: dict[str, Any], path: str
) -> None:
    reply = await client.call("POST", client.ws("/credentials"), json=body)
    assert reply.status == 422, reply.body
    assert error_paths(reply) == [path]


async def test_another_workspaces_credential_is_404(client: RecordingApi, stack: Stack) -> None:
    cid = (await create_credential(client, unique("mine"), {"token": "a"})).body["id"]
    async with signed_up(stack[0]) as other:
        for method, body in (("GET", None), ("PUT", {"data": {"token": "b"}}), ("DELETE", None)):
            reply = await other.call(method, other.ws(f"/credentials/{cid}"), json=body)
            assert reply.status == 404, (method, reply.body)
        listed = await other.call("GET", other.ws("/credentials"))
        assert listed.body == []
        foreign = await other.call("GET", f"workspaces/{client.workspace}/credentials")
        assert foreign.status == 404


@pytest.fixture
async def viewer(client: RecordingApi, stack: Stack, e2e_settings: Settings) -> AsyncIterator[Api]:
    """Another user, a viewer of `client`'s workspace."""
    async with signed_up(stack[0]) as other:
        email = (await other.call("GET", "me")).body["user"]["email"]
        container = await bootstrap(e2e_settings)
        try:
            cmd = AddMember(
                workspace_id=client.workspace, actor_role="owner", email=email, role="viewer"
            )
            await container.bus.execute(cmd)
        finally:
            await container.close()
        other.workspace = client.workspace
        yield other


async def test_a_viewer_reads_metadata_but_may_not_write(client: RecordingApi, viewer: Api) -> None:
    created = await create_credential(client, unique("ro"), {"token": "a"})
    cid = created.body["id"]
    listed = await viewer.call(
        "GET", viewer.ws("/credentials"), min_position=created.body["position"]
    )
    assert [c["id"] for c in listed.body] == [cid]
    writes = [
        ("POST", "/credentials", {"name": unique("v"), "data": {"token": "a"}}),
        ("PUT", f"/credentials/{cid}", {"data": {"token": "b"}}),
        ("DELETE", f"/credentials/{cid}", None),
        ("PUT", "/variables/region", {"value": "x"}),
        ("DELETE", "/variables/region", None),
    ]
    for method, path, body in writes:
        reply = await viewer.call(method, viewer.ws(path), json=body)
        assert (reply.status, reply.body["error"]["code"]) == (403, "forbidden"), (method, path)


# ---------------------------------------------------------------- variables


async def test_variables_are_set_read_deleted_and_reach_executions(client: RecordingApi) -> None:
    put = await client.call("PUT", client.ws("/variables/region"), json={"value": "eu-west"})
    assert put.status == 200, put.body
    await client.call("PUT", client.ws("/variables/limits"), json={"value": {"max": 3}})
    assert (await client.call("GET", client.ws("/variables"))).body == {
        "region": "eu-west",
        "limits": {"max": 3},
    }
    wf = await client.create_workflow(
        {
            "name": "vars",
            "nodes": [
                {
                    "id": "t",
                    "type": "transform",
                    "config": {
                        "set": {"where": "in {{ vars.region }}", "max": "{{ vars.limits.max }}"}
                    },
                }
            ],
        }
    )
    started = await client.start(wf["id"], None)
    done = await client.wait_terminal(started["execution_id"])
    assert done["output"] == {"where": "in eu-west", "max": 3}

    assert (await client.call("DELETE", client.ws("/variables/region"))).status == 204
    assert (await client.call("DELETE", client.ws("/variables/region"))).status == 404
    assert (await client.call("GET", client.ws("/variables"))).body == {"limits": {"max": 3}}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/variables/has-dash", {"value": 1}, "name"),
        ("/variables/big", {"value": "x" * 17_000}, "value"),
        ("/variables/none", {}, "value"),
    ],
)
async def test_invalid_variables_are_422_naming_the_field(
    client: RecordingApi, path: str, body: dict[str, Any], field: str
) -> None:
    reply = await client.call("PUT", client.ws(path), json=body)
    assert reply.status == 422, reply.body
    assert error_paths(reply) == [field]


# ---------------------------------------------------------------- the secret-leak test


def call_node(node_id: str, url: str, credential: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "http_request",
        "config": {
            "method": "POST",
            "url": url,
            "headers": {"Authorization": f"Bearer {{{{ credentials.{credential}.token }}}}"},
            "query": {"q": f"{{{{ credentials.{credential}.token }}}}"},
            "body": {"note": "{{ trigger.note }}"},
        },
        "on_error": "continue",
    }


async def leaks_in_postgres(settings: Settings, needles: list[bytes]) -> dict[bytes, list[str]]:
    """Where each needle occurs in any column of any row of any table (bytes searched raw)."""
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    pool = await open_pool(settings, max_size=1)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
            tables = [row["tablename"] for row in await cur.fetchall()]
            for table in tables:
                cur = await conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                for row in await cur.fetchall():
                    for column, value in row.items():
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        for needle in needles:
                            if needle in raw or needle in json.dumps(value, default=str).encode():
                                found[needle].append(f"{table}.{column}")
    finally:
        await pool.close()
    return found


async def leaks_in_redis(settings: Settings, needles: list[bytes]) -> dict[bytes, list[str]]:
    """Where each needle occurs in any key under the prefix (every stream entry read)."""
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    redis = Redis.from_url(settings.redis_url)
    try:
        async for key in redis.scan_iter(match=f"{settings.redis_prefix}*"):
            kind = (await redis.type(key)).decode()
            blobs: list[bytes] = [key]
            if kind == "stream":
                for _, fields in await redis.xrange(key, "-", "+"):
                    blobs.extend(b for pair in fields.items() for b in pair)
            elif kind == "string":
                blobs.append(await redis.get(key) or b"")
            elif kind == "hash":
                blobs.extend(b for pair in (await redis.hgetall(key)).items() for b in pair)
            elif kind == "list":
                blobs.extend(await redis.lrange(key, 0, -1))
            elif kind == "set":
                blobs.extend(await redis.smembers(key))
            elif kind == "zset":
                blobs.extend(await redis.zrange(key, 0, -1))
            for needle in needles:
                if any(needle in blob for blob in blobs):
                    found[needle].append(key.decode())
    finally:
        await redis.aclose()
    return found


async def test_a_secret_reaches_the_target_and_nowhere_else(
    client: RecordingApi, stack: Stack, target: str, e2e_settings: Settings
) -> None:
    secret = f"lf-plaintext-{uuid.uuid4().hex}"
    name = unique("vault")
    created = await create_credential(client, name, {"token": secret, "spare": "unused"})
    assert created.status == 201, created.body
    missing = unique("missing")
    wf = await client.create_workflow(
        {
            "name": "uses a secret",
            "nodes": [
                call_node("call", f"{target}/echo?k={{{{ credentials.{name}.token }}}}", name),
                call_node("broken", f"no-scheme-{{{{ credentials.{name}.token }}}}", name),
                call_node("unknown", f"{target}/echo", missing),
            ],
        }
    )
    injection = f"{{{{ credentials.{name}.token }}}}"
    started = await client.start(wf["id"], {"note": injection})
    done = await client.wait_terminal(started["execution_id"])
    assert done["status"] == "completed", done
    nodes = {n["id"]: n for n in done["nodes"]}

    # The target really received the secret, where the config put it, and only there.
    async with client.session.get(f"{target}/echoed") as resp:
        [received] = [r for r in await resp.json() if r["query"].get("k") == secret]
    assert received["headers"]["Authorization"] == f"Bearer {secret}"
    assert received["query"] == {"k": secret, "q": secret}
    assert json.loads(received["body"]) == {"note": injection}  # trigger text stays text

    # What LinkFlow recorded of it is redacted.
    echoed = nodes["call"]["output"]["body"]
    assert echoed["headers"]["Authorization"] == "Bearer [redacted]"
    assert echoed["query"] == {"k": "[redacted]", "q": "[redacted]"}
    assert nodes["broken"]["status"] == "failed"
    assert nodes["broken"]["error"]["type"] == "invalid_url"
    assert nodes["unknown"]["error"] == {
        "type": "credential_error",
        "message": f"credential {missing!r} not found",
    }

    # Every answer of every read the API offers on it.
    eid = started["execution_id"]
    for path in (
        f"/executions/{eid}",
        f"/executions/{eid}/history",
        "/executions",
        f"/workflows/{wf['id']}",
        "/credentials",
        f"/credentials/{created.body['id']}",
    ):
        assert (await client.call("GET", client.ws(path))).status == 200, path

    needles = [secret.encode(), name.encode()]  # the name: proof that the search sees content
    in_postgres = await leaks_in_postgres(e2e_settings, needles)
    in_redis = await leaks_in_redis(e2e_settings, needles)
    logs = stack[1].output()
    assert in_postgres[name.encode()] and in_redis[name.encode()]
    assert in_postgres[secret.encode()] == []
    assert in_redis[secret.encode()] == []
    assert secret not in logs
    assert [a for a in client.answers if secret in a] == []
