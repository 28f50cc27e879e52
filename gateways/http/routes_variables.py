"""Workspace variable routes: read them all, set one (PUT), delete one. Variables are not
secret; node configs read them as `{{ vars.<name> }}` and each execution records the values it
started with. Reads come from the write model (one small aggregate per workspace), so they are
always current. A value is at most 16 KiB as JSON, and a workspace's variables together at most
`LINKFLOW_MAX_VARIABLES_BYTES` (else 422 `too_large` naming `value`). `ROUTES` is the table
`app.make_app` registers and `openapi` documents. Imported by `gateways.http.app`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from commands.handlers import workspace_variables
from commands.variables import DeleteVariable, SetVariable, VariablesTooLarge
from domain.roles import Action
from domain.variables import NAME_PATTERN
from gateways.http.auth import workspace_access
from gateways.http.consistency import MIN_POSITION, min_position
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, build, invalid, read_json
from gateways.http.routing import Route

BASE = "/api/v1/workspaces/{ws}/variables"
ONE = BASE + "/{name}"
MAX_VALUE_BYTES = 16 * 1024
_NAME = re.compile(NAME_PATTERN)


class VariableBody(BaseModel):
    """`PUT …/variables/{name}`."""

    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description=f"any JSON value, at most {MAX_VALUE_BYTES} bytes as JSON")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise invalid("name", f"a variable name must match {NAME_PATTERN}")
    return name


async def list_variables(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    min_position(request)  # validated only: read from the write model, always current
    return respond(await container(request).bus.run(workspace_variables, ws))


async def set_variable(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_VARIABLES)
    name = _name(request)
    body = build(VariableBody, await read_json(request))
    if len(json.dumps(body.value, separators=(",", ":")).encode()) > MAX_VALUE_BYTES:
        raise invalid("value", f"must be at most {MAX_VALUE_BYTES} bytes as JSON")
    cmd = SetVariable(workspace_id=ws, name=name, value=body.value)
    try:
        result = await container(request).bus.execute(cmd)
    except VariablesTooLarge as exc:
        raise invalid("value", str(exc), code="too_large") from None
    return respond(result.fields | {"position": result.position})


async def delete_variable(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_VARIABLES)
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise ApiError(404, "not_found", "variable not found")
    await container(request).bus.execute(DeleteVariable(workspace_id=ws, name=name))
    return web.Response(status=204)


ROUTES: list[Route] = [
    Route(
        "GET",
        BASE,
        list_variables,
        "The workspace's variables as {name: value}",
        params=(MIN_POSITION,),
        tag="variables",
    ),
    Route(
        "PUT",
        ONE,
        set_variable,
        "Set a variable (node configs read it as {{ vars.<name> }})",
        body=VariableBody,
        tag="variables",
    ),
    Route("DELETE", ONE, delete_variable, "Delete a variable", status=204, tag="variables"),
]
