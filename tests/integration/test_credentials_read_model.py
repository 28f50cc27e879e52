"""The `rm_credentials` read model on the real PostgreSQL: the projector follows create, update,
delete and reuse of a name, and `rebuild-read-models` rebuilds the same rows from the log."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from stack import eventually, roles

from commands import models as m
from commands.credentials import CreateCredential, DeleteCredential, UpdateCredential
from gateways.bootstrap import Container
from gateways.roles import rebuild_read_models
from infra.eventlog import head_position
from infra.settings import Settings
from projections import queries
from projections.credentials import list_credentials


async def credential_rows(c: Container) -> list[dict[str, Any]]:
    async with c.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM rm_credentials ORDER BY name")
        rows = await cur.fetchall()
        await conn.commit()
        return rows


async def projected(c: Container) -> bool:
    async with c.pool.connection() as conn:
        done = await queries.projector_position(conn) >= await head_position(conn)
        await conn.commit()
        return done


async def test_rm_credentials_follows_the_log_and_rebuilds_the_same(
    fresh_settings: Settings,
) -> None:
    async with roles(fresh_settings, "projector") as r:
        c = r.container
        reg = c.bus.handle(
            m.RegisterUser(email=f"{uuid4().hex[:8]}@example.com", password="s3cret-pw", name="T")
        )
        ws = UUID(reg.fields["workspace"]["id"])

        def create(name: str, fields: list[str]) -> UUID:
            cmd = CreateCredential(
                workspace_id=ws, name=name, type="t", sealed_data="v1.x", fields=fields
            )
            return UUID(c.bus.handle(cmd).fields["id"])

        kept, gone, back = create("kept", ["a"]), create("gone", ["a"]), create("back", ["a"])
        c.bus.handle(
            UpdateCredential(
                workspace_id=ws, credential_id=kept, sealed_data="v1.y", fields=["b", "c"]
            )
        )
        c.bus.handle(DeleteCredential(workspace_id=ws, credential_id=gone))
        c.bus.handle(DeleteCredential(workspace_id=ws, credential_id=back))
        assert create("back", ["z"]) == back
        await eventually(lambda: projected(c), timeout=10)
        live = await credential_rows(c)
        async with c.pool.connection() as conn:
            listed = await list_credentials(conn, ws)
        assert [(x["name"], x["fields"]) for x in listed] == [("back", ["z"]), ("kept", ["b", "c"])]
        await r.stop("projector")

        assert await rebuild_read_models(fresh_settings) is not None
        assert await credential_rows(c) == live
