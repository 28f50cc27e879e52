"""Workflow routes: create, list, read, publish a new version (PUT), archive (DELETE), versions,
activate and deactivate. Writes go through the command bus; reads come from the visibility read
models. `ROUTES` is the table `app.make_app` registers and `openapi` documents. Imported by
`gateways.http.app` and `gateways.http.openapi`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from commands import models as m
from commands.handlers import Result
from domain.roles import Action
from domain.workflow import Workflow
from gateways.http.auth import actor, workspace_access
from gateways.http.consistency import MIN_POSITION, answer_read
from gateways.http.context import container, respond
from gateways.http.errors import ApiError, build, invalid, parse_uuid, read_json
from gateways.http.routing import Param, Route
from projections import queries

BASE = "/api/v1/workspaces/{ws}/workflows"
ONE = BASE + "/{wf}"

DEFINITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "A workflow definition {name, trigger, nodes, edges, settings} (see the API contract),"
        " or a workflow in the LinkFlow export format, which is normalised to it."
    ),
    "required": ["name", "nodes"],
    "properties": {
        "name": {"type": "string"},
        "trigger": {"type": "object"},
        "nodes": {"type": "array", "items": {"type": "object"}},
        "edges": {"type": "array", "items": {"type": "object"}},
        "settings": {"type": "object"},
    },
}


def _answer(result: Result, status: int = 200, **headers: str) -> web.Response:
    return respond(result.fields | {"position": result.position}, status=status, headers=headers)


def _workflow_id(request: web.Request) -> UUID:
    return parse_uuid(request.match_info["wf"], "workflow")


async def _definition(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "invalid_definition",
            "the workflow definition is invalid",
            [{"path": "", "message": "a workflow definition must be a JSON object"}],
        )
    return body


async def create_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_WORKFLOWS)
    cmd = m.CreateWorkflow(
        workspace_id=ws, actor_id=await actor(request), definition=await _definition(request)
    )
    result = await container(request).bus.execute(cmd)
    location = f"/api/v1/workspaces/{ws}/workflows/{result.fields['id']}"
    return _answer(result, 201, Location=location)


def _include_archived(request: web.Request) -> bool:
    raw = request.query.get("include_archived", "false").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no", ""):
        return False
    raise invalid("include_archived", "must be true or false")


async def list_workflows(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    include_archived = _include_archived(request)
    return await answer_read(request, queries.list_workflows, ws, include_archived)


async def get_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    wf = _workflow_id(request)
    return await answer_read(
        request, queries.get_workflow, ws, wf, missing="workflow", by_id=(Workflow, ws, wf)
    )


async def update_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_WORKFLOWS)
    wf = _workflow_id(request)
    definition = await _definition(request)
    cmd = m.UpdateWorkflow(workspace_id=ws, workflow_id=wf, definition=definition)
    return _answer(await container(request).bus.execute(cmd))


async def archive_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_WORKFLOWS)
    cmd = m.ArchiveWorkflow(workspace_id=ws, workflow_id=_workflow_id(request))
    return _answer(await container(request).bus.execute(cmd))


async def list_versions(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    wf = _workflow_id(request)
    # Every workflow has a first version: no versions means no such workflow.
    return await answer_read(
        request, queries.list_versions, ws, wf, missing="workflow", by_id=(Workflow, ws, wf)
    )


async def get_version(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ)
    wf = _workflow_id(request)
    raw = request.match_info["n"]
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(404, "not_found", "version not found")
    return await answer_read(
        request, queries.get_version, ws, wf, int(raw), missing="version", by_id=(Workflow, ws, wf)
    )


async def activate_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_WORKFLOWS)
    wf = _workflow_id(request)
    body = await read_json(request, optional=True)
    cmd = build(m.ActivateWorkflow, body, workspace_id=ws, workflow_id=wf)
    return _answer(await container(request).bus.execute(cmd))


async def deactivate_workflow(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.WRITE_WORKFLOWS)
    wf = _workflow_id(request)
    body = await read_json(request, optional=True)
    cmd = build(m.DeactivateWorkflow, body, workspace_id=ws, workflow_id=wf)
    return _answer(await container(request).bus.execute(cmd))


_IDS = ("workspace_id", "workflow_id")

ROUTES: list[Route] = [
    Route(
        "POST",
        BASE,
        create_workflow,
        "Create a workflow (version 1, inactive) from a definition",
        status=201,
        body=DEFINITION_SCHEMA,
        tag="workflows",
        extra_responses={422: "invalid_definition: one details entry per problem"},
    ),
    Route(
        "GET",
        BASE,
        list_workflows,
        "The workspace's workflows, newest first",
        params=(
            Param("include_archived", {"type": "boolean"}, "also list archived workflows"),
            MIN_POSITION,
        ),
        tag="workflows",
    ),
    Route(
        "GET",
        ONE,
        get_workflow,
        "A workflow with its latest version's definition",
        params=(MIN_POSITION,),
        tag="workflows",
    ),
    Route(
        "PUT",
        ONE,
        update_workflow,
        "Publish a new version of a workflow (versions are immutable)",
        body=DEFINITION_SCHEMA,
        tag="workflows",
        extra_responses={422: "invalid_definition: one details entry per problem"},
    ),
    Route(
        "DELETE",
        ONE,
        archive_workflow,
        "Archive a workflow (its history stays)",
        tag="workflows",
    ),
    Route(
        "GET",
        ONE + "/versions",
        list_versions,
        "A workflow's versions",
        params=(MIN_POSITION,),
        tag="workflows",
    ),
    Route(
        "GET",
        ONE + "/versions/{n}",
        get_version,
        "One version of a workflow, with its definition",
        params=(MIN_POSITION,),
        tag="workflows",
    ),
    Route(
        "POST",
        ONE + "/activate",
        activate_workflow,
        "Activate a version (default: the latest): enables its webhook and schedule triggers",
        body=m.ActivateWorkflow,
        body_required=False,
        server_fields=_IDS,
        tag="workflows",
    ),
    Route(
        "POST",
        ONE + "/deactivate",
        deactivate_workflow,
        "Deactivate a workflow: disables its webhook and schedule triggers",
        body=m.DeactivateWorkflow,
        body_required=False,
        server_fields=_IDS,
        tag="workflows",
    ),
]
