"""Sessions, members, API keys and workspace deletion over the real HTTP API and stack."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
from api import Api, signed_up

PASSWORD = "correct horse"


def minimal_workflow(name: str = "w") -> dict[str, Any]:
    return {"name": name, "nodes": [{"id": "a", "type": "transform", "config": {"set": {"x": 1}}}]}


async def login(api: Api, email: str, password: str = PASSWORD) -> Any:
    return await api.call(
        "POST", "auth/login", json={"email": email, "password": password}, token=""
    )


# ---------------------------------------------------------------- sessions


async def test_refresh_rotates_and_the_old_token_stops_working(stack: tuple[str, Any]) -> None:
    async with signed_up(stack[0]) as api:
        email = (await api.call("GET", "me")).body["user"]["email"]
        first = (await login(api, email)).body
        second = await api.call(
            "POST", "auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert second.status == 200, second.body
        assert second.body["token_type"] == "Bearer" and second.body["expires_in"] == 900
        assert second.body["refresh_token"] != first["refresh_token"]
        me = await api.call("GET", "me", token=second.body["access_token"])
        assert me.status == 200 and me.body["user"]["email"] == email
        # The rotated-away token is refused, and its re-use revokes the whole family:
        again = await api.call(
            "POST", "auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert again.status == 401 and again.body["error"]["code"] == "invalid_refresh_token"
        newest = await api.call(
            "POST", "auth/refresh", json={"refresh_token": second.body["refresh_token"]}
        )
        assert newest.status == 401, "re-use of a rotated token must revoke the family"
        # Another login (another family) is unaffected.
        other = (await login(api, email)).body
        ok = await api.call("POST", "auth/refresh", json={"refresh_token": other["refresh_token"]})
        assert ok.status == 200


async def test_logout_revokes_the_refresh_token(api: Api) -> None:
    email = (await api.call("GET", "me")).body["user"]["email"]
    tokens = (await login(api, email)).body
    out = await api.call("POST", "auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status == 204
    after = await api.call("POST", "auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert after.status == 401
    for bad in ({"refresh_token": "lfr_nonsense"}, {"refresh_token": ""}, {}):
        reply = await api.call("POST", "auth/logout", json=bad)
        assert reply.status in (401, 422), (bad, reply.body)
        assert "error" in reply.body


async def test_login_is_throttled_per_account(api: Api) -> None:
    email = (await api.call("GET", "me")).body["user"]["email"]
    for _ in range(5):
        assert (await login(api, email, "wrong password")).status == 401
    locked = await login(api, email)  # even the right password, while locked
    assert locked.status == 429, locked.body
    assert locked.body["error"]["code"] == "too_many_attempts"
    assert 1 <= int(locked.headers["Retry-After"]) <= 900


async def test_login_is_throttled_per_address(stack: tuple[str, Any]) -> None:
    """20 failures from one address (over many accounts) lock that address, not others."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.7", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        attacker = Api(stack[0], session)
        for i in range(20):
            reply = await login(attacker, f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.com", "x")
            assert reply.status == 401, reply.body
        locked = await login(attacker, f"fresh-{uuid.uuid4().hex[:6]}@example.com", "x")
        assert locked.status == 429 and int(locked.headers["Retry-After"]) >= 1
    async with signed_up(stack[0]) as other:  # 127.0.0.1 still logs in
        assert other.token


# ---------------------------------------------------------------- members


async def test_member_roles_change_what_a_member_may_do(stack: tuple[str, Any]) -> None:
    async with signed_up(stack[0]) as owner, signed_up(stack[0]) as bob:
        bob_me = (await bob.call("GET", "me")).body["user"]
        added = await owner.call(
            "POST", owner.ws("/members"), json={"email": bob_me["email"], "role": "viewer"}
        )
        assert added.status == 201 and added.body["role"] == "viewer", added.body
        bob.workspace = owner.workspace
        roles = {w["id"]: w["role"] for w in (await bob.call("GET", "me")).body["workspaces"]}
        assert roles[owner.workspace] == "viewer"

        assert (await bob.call("GET", bob.ws("/workflows"))).status == 200
        denied = await bob.call("POST", bob.ws("/workflows"), json=minimal_workflow())
        assert denied.status == 403 and denied.body["error"]["code"] == "forbidden"

        path = owner.ws(f"/members/{bob_me['id']}")
        assert (await owner.call("PATCH", path, json={"role": "member"})).status == 200
        assert (await bob.call("POST", bob.ws("/workflows"), json=minimal_workflow())).status == 201
        assert (await bob.call("GET", bob.ws("/api-keys"))).status == 403  # no key management

        assert (await owner.call("PATCH", path, json={"role": "admin"})).status == 200
        members = (await bob.call("GET", bob.ws("/members"))).body
        assert {m["role"] for m in members} == {"owner", "admin"}
        owner_id = next(m["user_id"] for m in members if m["role"] == "owner")
        # An admin may not transfer ownership, touch the owner, or delete the workspace.
        for method, target, body in (
            ("PATCH", f"/members/{bob_me['id']}", {"role": "owner"}),
            ("PATCH", f"/members/{owner_id}", {"role": "viewer"}),
            ("DELETE", f"/members/{owner_id}", None),
            ("DELETE", "", None),
        ):
            reply = await bob.call(method, bob.ws(target), json=body)
            assert reply.status == 403, (method, target, reply.body)

        # The last owner cannot leave or step down.
        last = await owner.call("PATCH", owner.ws(f"/members/{owner_id}"), json={"role": "admin"})
        assert last.status == 409 and last.body["error"]["code"] == "last_owner"
        assert (await owner.call("DELETE", owner.ws(f"/members/{owner_id}"))).status == 409

        assert (await owner.call("DELETE", path)).status == 204
        gone = await bob.call("GET", bob.ws("/workflows"))
        assert gone.status == 404
        assert owner.workspace not in {
            w["id"] for w in (await bob.call("GET", "me")).body["workspaces"]
        }


async def test_member_input_errors_name_the_field(api: Api) -> None:
    cases = [
        ({"email": "nobody-here@example.com", "role": "viewer"}, "email"),
        ({"email": "x@example.com", "role": "king"}, "role"),
        ({"role": "viewer"}, "email"),
    ]
    for body, field in cases:
        reply = await api.call("POST", api.ws("/members"), json=body)
        assert reply.status == 422, reply.body
        assert field in {d["path"] for d in reply.body["error"]["details"]}
    me = (await api.call("GET", "me")).body["user"]
    dup = await api.call("POST", api.ws("/members"), json={"email": me["email"], "role": "viewer"})
    assert dup.status == 409 and dup.body["error"]["code"] == "already_member"
    unknown = await api.call("PATCH", api.ws(f"/members/{uuid.uuid4()}"), json={"role": "viewer"})
    assert unknown.status == 404


async def test_ownership_can_be_transferred_by_an_owner(stack: tuple[str, Any]) -> None:
    async with signed_up(stack[0]) as owner, signed_up(stack[0]) as heir:
        heir_me = (await heir.call("GET", "me")).body["user"]
        owner_me = (await owner.call("GET", "me")).body["user"]
        reply = await owner.call(
            "POST", owner.ws("/members"), json={"email": heir_me["email"], "role": "owner"}
        )
        assert reply.status == 201
        step_down = await owner.call(
            "PATCH", owner.ws(f"/members/{owner_me['id']}"), json={"role": "member"}
        )
        assert step_down.status == 200
        heir.workspace = owner.workspace
        assert (await heir.call("DELETE", heir.ws())).status == 204
        assert (await owner.call("GET", owner.ws("/workflows"))).status == 404
        assert (await heir.call("GET", heir.ws("/executions"))).status == 404


# ---------------------------------------------------------------- API keys


async def test_api_keys_are_shown_once_usable_listed_and_revocable(stack: tuple[str, Any]) -> None:
    async with signed_up(stack[0]) as owner, signed_up(stack[0]) as stranger:
        created = await owner.call(
            "POST", owner.ws("/api-keys"), json={"name": "ci", "role": "member"}
        )
        assert created.status == 201, created.body
        key = created.body["key"]
        assert key.startswith("lfk_") and created.body["role"] == "member"

        machine = Api(stack[0], owner.session)
        machine.token, machine.workspace = key, owner.workspace
        wf = await machine.create_workflow(minimal_workflow())
        started = await machine.start(wf["id"], {"n": 1})
        assert (await machine.wait_terminal(started["execution_id"]))["status"] == "completed"
        # Bound to its workspace and role:
        assert (await machine.call("GET", stranger.ws("/workflows"))).status == 404
        assert (await machine.call("GET", machine.ws("/api-keys"))).status == 403
        assert (await machine.call("GET", "me")).status == 403

        listed = await owner.call("GET", owner.ws("/api-keys"), min_position=started["position"])
        assert listed.status == 200
        (entry,) = listed.body
        assert entry["name"] == "ci" and "key" not in entry and key not in str(listed.body)
        assert entry["last_used_at"] is not None

        assert (await owner.call("DELETE", owner.ws(f"/api-keys/{entry['id']}"))).status == 204
        revoked = await machine.call("GET", machine.ws("/workflows"))
        assert revoked.status == 401 and revoked.body["error"]["code"] == "invalid_token"
        tampered = await machine.call("GET", machine.ws("/workflows"), token=key[:-2] + "xx")
        assert tampered.status == 401
        assert (await owner.call("DELETE", owner.ws(f"/api-keys/{entry['id']}"))).status == 404


async def test_api_key_roles_are_bounded_by_the_creator(stack: tuple[str, Any]) -> None:
    async with signed_up(stack[0]) as owner, signed_up(stack[0]) as admin:
        admin_me = (await admin.call("GET", "me")).body["user"]
        await owner.call(
            "POST", owner.ws("/members"), json={"email": admin_me["email"], "role": "admin"}
        )
        admin.workspace = owner.workspace
        refused = await admin.call(
            "POST", admin.ws("/api-keys"), json={"name": "k", "role": "owner"}
        )
        assert refused.status == 403
        ok = await admin.call("POST", admin.ws("/api-keys"), json={"name": "k", "role": "viewer"})
        assert ok.status == 201
        bad = await admin.call("POST", admin.ws("/api-keys"), json={"name": "", "role": "viewer"})
        assert bad.status == 422 and bad.body["error"]["details"][0]["path"] == "name"


async def test_expired_access_token_is_refused(api: Api, e2e_settings: Any) -> None:
    from gateways.http.tokens import issue_access_token

    me = (await api.call("GET", "me")).body["user"]
    old, _ = issue_access_token(e2e_settings, uuid.UUID(me["id"]), now=time.time() - 3600)
    reply = await api.call("GET", "me", token=old)
    assert reply.status == 401 and reply.body["error"]["code"] == "invalid_token"
