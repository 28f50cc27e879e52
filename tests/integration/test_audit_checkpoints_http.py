"""`GET …/audit/checkpoints` and `GET /audit/keys`: who may read them (owner, admin, auditor;
members and viewers 403; another workspace 404; anonymous 401), paging and bad input, and that a
checkpoint's signature verifies with a listed key."""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
from api import Api
from stack import eventually, roles

from domain.audit_signing import SigningKey, b64, checkpoint_message, unb64, verify_signature
from infra.settings import Settings

KEY = SigningKey.generate()
WORKFLOW = {
    "name": "audited",
    "nodes": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    "edges": [],
}


def _count(settings: Settings, ws: str) -> int:
    with psycopg.connect(settings.conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_checkpoints WHERE workspace_id = %s", (ws,)
        ).fetchone()
        return int(row[0]) if row else 0


async def _checkpointed(settings: Settings, ws: str, at_least: int) -> bool:
    return await asyncio.to_thread(_count, settings, ws) >= at_least


async def test_checkpoints_are_read_by_owner_and_auditor_and_hidden_from_others(
    api: Api, fresh_settings: Settings
) -> None:
    settings = fresh_settings.model_copy(
        update={"audit_signing_key": b64(KEY.private_bytes()), "audit_checkpoint_s": 0.1}
    )
    ws = api.workspace
    assert ws is not None
    async with roles(settings, "relay", "audit"):
        await eventually(lambda: _checkpointed(settings, ws, 1), timeout=30)
        await api.create_workflow(WORKFLOW)
        await eventually(lambda: _checkpointed(settings, ws, 2), timeout=30)
    path = api.ws("/audit/checkpoints")
    mine = await api.call("GET", path)
    assert mine.status == 200 and len(mine.body) >= 2, mine.body
    keys = await api.call("GET", "audit/keys", token="")
    assert keys.status == 200
    listed = {k["key_id"]: k for k in keys.body}
    for cp in mine.body:
        key = listed[cp["key_id"]]
        assert key["algorithm"] == "ed25519" and set(key) == {"key_id", "algorithm", "public_key"}
        message = checkpoint_message(
            ws,
            cp["position"],
            bytes.fromhex(cp["chain_hash"]),
            datetime.fromisoformat(cp["signed_at"].replace("Z", "+00:00")),
        )
        assert verify_signature(unb64(key["public_key"]), message, unb64(cp["signature"]))
    assert KEY.key_id in listed and b64(KEY.private_bytes()) not in str(keys.body)

    first = mine.body[0]["position"]
    page = await api.call("GET", path, after=first, limit=1)
    assert [cp["position"] for cp in page.body] == [mine.body[1]["position"]]
    for name, value in (("limit", "0"), ("limit", "1001"), ("after", "-1"), ("after", "x")):
        bad = await api.call("GET", path, **{name: value})
        assert bad.status == 422 and bad.body["error"]["details"][0]["path"] == name, bad.body

    anonymous = await api.call("GET", path, token="")
    assert anonymous.status == 401
    stranger = Api(api.base, api.session)
    await stranger.sign_up()
    other = await stranger.call("GET", path)
    assert (other.status, other.body["error"]["code"]) == (404, "not_found")
    me = (await stranger.call("GET", "me")).body["user"]
    added = await api.call(
        "POST", api.ws("/members"), json={"email": me["email"], "role": "viewer"}
    )
    assert added.status == 201, added.body
    for role, expected in (("viewer", 403), ("member", 403), ("auditor", 200), ("admin", 200)):
        if role != "viewer":
            changed = await api.call("PATCH", api.ws(f"/members/{me['id']}"), json={"role": role})
            assert changed.status == 200, changed.body
        reply = await stranger.call("GET", path)
        assert reply.status == expected, (role, reply.body)


async def test_a_checkpoint_list_of_an_unknown_workspace_is_404(api: Api) -> None:
    reply = await api.call(
        "GET", "workspaces/00000000-0000-4000-8000-000000000000/audit/checkpoints"
    )
    assert reply.status == 404
