"""Credential routes: create, list, read, replace the data of (PUT) and delete a workspace's
credentials. The data is sealed here, before any command is built (`SecretBox`, bound to the
credential's id): commands, events, streams and answers carry only the sealed text and the field
names, never the data. Lists come from the `rm_credentials` read model. `ROUTES` is the table
`app.make_app` registers and `openapi` documents. Imported by `gateways.http.app`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commands.credentials import (
    FIELD_PATTERN,
    TYPE_PATTERN,
    CreateCredential,
    DeleteCredential,
    UpdateCredential,
)
from commands.handlers import Result
from domain.credential import NAME_PATTERN, Credential
from domain.roles import Action
from gateways.http.auth import workspace_access
from gateways.http.consistency import MIN_POSITION, answer_read
from gateways.http.context import container, respond
from gateways.http.errors import build, invalid, parse_uuid, read_json
from gateways.http.routing import Route
from projections import credentials as queries

BASE = "/api/v1/workspaces/{ws}/credentials"
ONE = BASE + "/{credential_id}"
MAX_DATA_BYTES = 16 * 1024
_FIELD = re.compile(FIELD_PATTERN)

_DATA = Field(
    min_length=1,
    description=(
        'the secret fields, e.g. {"token": "…"}; write-only (stored encrypted, never'
        f" returned); at most {MAX_DATA_BYTES} bytes as JSON. Node configs of workers' nodes"
        " read a field as {{ credentials.<name>.<field> }}"
    ),
)


class CredentialBody(BaseModel):
    """`POST …/credentials`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: str = Field(default="generic", pattern=TYPE_PATTERN)
    data: dict[str, Any] = _DATA


class CredentialUpdateBody(BaseModel):
    """`PUT …/credentials/{credential_id}`: new data (all of it), and the type if it changes."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, pattern=TYPE_PATTERN)
    data: dict[str, Any] = _DATA


def _fields(data: dict[str, Any]) -> list[str]:
    """The field names, after checking the names and the size (422 naming `data`)."""
    for name in data:
        if not _FIELD.fullmatch(name):
            raise invalid(f"data.{name}", f"a field name must match {FIELD_PATTERN}")
    if len(json.dumps(data, separators=(",", ":")).encode()) > MAX_DATA_BYTES:
        raise invalid("data", f"must be at most {MAX_DATA_BYTES} bytes as JSON")
    return sorted(data)


def _answer(result: Result, status: int = 200, **headers: str) -> web.Response:
    return respond(result.fields | {"position": result.position}, status=status, headers=headers)


def _credential_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["credential_id"], "credential")


async def create_credential(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_CREDENTIALS)
    body = build(CredentialBody, await read_json(request))
    fields = _fields(body.data)
    c = container(request)
    context = Credential.sealing_context(Credential.id_for(str(ws), body.name))
    cmd = CreateCredential(
        workspace_id=ws,
        name=body.name,
        type=body.type,
        sealed_data=c.box.seal(body.data, context),
        fields=fields,
    )
    result = await c.bus.execute(cmd)
    return _answer(result, 201, Location=f"{BASE.format(ws=ws)}/{result.fields['id']}")


async def list_credentials(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    return await answer_read(request, queries.list_credentials, ws)


async def get_credential(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    credential_id = _credential_id(request)
    return await answer_read(
        request,
        queries.get_credential,
        ws,
        credential_id,
        missing="credential",
        by_id=(Credential, ws, credential_id),
    )


async def update_credential(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_CREDENTIALS)
    credential_id = _credential_id(request)
    body = build(CredentialUpdateBody, await read_json(request))
    fields = _fields(body.data)
    c = container(request)
    cmd = UpdateCredential(
        workspace_id=ws,
        credential_id=credential_id,
        type=body.type,
        sealed_data=c.box.seal(body.data, Credential.sealing_context(credential_id)),
        fields=fields,
    )
    return _answer(await c.bus.execute(cmd))


async def delete_credential(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_CREDENTIALS)
    cmd = DeleteCredential(workspace_id=ws, credential_id=_credential_id(request))
    await container(request).bus.execute(cmd)
    return web.Response(status=204)


_CONFLICT = {409: "credential_exists: the workspace has a credential of this name"}

ROUTES: list[Route] = [
    Route(
        "POST",
        BASE,
        create_credential,
        "Create a credential (its data is stored encrypted and never returned)",
        status=201,
        body=CredentialBody,
        tag="credentials",
        extra_responses=_CONFLICT,
    ),
    Route(
        "GET",
        BASE,
        list_credentials,
        "The workspace's credentials by name (metadata and field names, no data)",
        params=(MIN_POSITION,),
        tag="credentials",
    ),
    Route(
        "GET",
        ONE,
        get_credential,
        "One credential's metadata and field names (no data)",
        params=(MIN_POSITION,),
        tag="credentials",
    ),
    Route(
        "PUT",
        ONE,
        update_credential,
        "Replace a credential's data (and optionally its type)",
        body=CredentialUpdateBody,
        tag="credentials",
    ),
    Route("DELETE", ONE, delete_credential, "Delete a credential", status=204, tag="credentials"),
]
