"""The OpenAPI 3.1 document of the HTTP API, built from the route tables (`ROUTES` of each
routes module and of `ops`), so it cannot drift from what is served. Request schemas come from
the pydantic command models, minus the fields the gateway fills itself. Imported by
`gateways.http.app`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from gateways.http.context import respond
from gateways.http.routing import Route

OPENAPI_PATH = "/api/v1/openapi.json"
_REF = "#/components/schemas/{model}"

_PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "ws": ({"type": "string", "format": "uuid"}, "workspace id"),
    "wf": ({"type": "string", "format": "uuid"}, "workflow id"),
    "id": ({"type": "string", "format": "uuid"}, "execution id"),
    "n": ({"type": "integer", "minimum": 1}, "version number"),
}

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "snake_case, stable"},
                "message": {"type": "string", "description": "for people"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}

_STANDARD_ERRORS = {
    400: "malformed_json",
    401: "unauthenticated / invalid_token",
    403: "forbidden (the role does not permit it)",
    404: "not_found (unknown, or not yours)",
    409: "conflict (the code says which)",
    413: "payload_too_large / event_too_large (what the request would store is too large)",
    422: "invalid_request / invalid_definition / invalid_cursor / too_deep (JSON nested deeper"
    " than LINKFLOW_MAX_JSON_DEPTH) / too_large",
    429: "too_many_executions / too_many_attempts (see Retry-After)",
    503: (
        "busy / projection_lag / unavailable (PostgreSQL or Redis away, or the request"
        " deadline passed: the outcome is unknown, retry with the same Idempotency-Key);"
        " see Retry-After"
    ),
}


def _body_schema(route: Route, schemas: dict[str, Any]) -> dict[str, Any] | None:
    body = route.body
    if body is None:
        return None
    if isinstance(body, dict):
        return body
    if not (isinstance(body, type) and issubclass(body, BaseModel)):
        return None
    schema = copy.deepcopy(body.model_json_schema(ref_template=_REF))
    schemas.update(schema.pop("$defs", {}))
    if route.server_fields:
        props = schema.get("properties", {})
        for name in route.server_fields:
            props.pop(name, None)
        required = [n for n in schema.get("required", []) if n not in route.server_fields]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
    name = f"{body.__name__}Request"
    schema["title"] = name
    schemas[name] = schema
    return {"$ref": _REF.format(model=name)}


def _operation_id(route: Route) -> str:
    return route.handler.__name__


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", route.path):
        schema, description = _PATH_PARAMS.get(name, ({"type": "string"}, name))
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": description,
            }
        )
    for param in route.params:
        entry: dict[str, Any] = {
            "name": param.name,
            "in": param.location,
            "required": param.required,
            "schema": param.schema,
        }
        if param.description:
            entry["description"] = param.description
        params.append(entry)
    responses: dict[str, Any] = {str(route.status): {"description": "success"}}
    error = {"$ref": "#/components/responses/Error"}
    for status, description in sorted(route.extra_responses.items()):
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    responses["default"] = error
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
        "security": [{"bearerAuth": []}] if route.auth else [],
    }
    if params:
        operation["parameters"] = params
    body = _body_schema(route, schemas)
    if body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def build_document(routes: Iterable[Route], version: str = "0.1.0") -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    errors = "; ".join(f"{status} {text}" for status, text in _STANDARD_ERRORS.items())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LinkFlow API",
            "version": version,
            "description": "Workflow automation on an event-sourced backend. Errors: " + errors,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "an error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearerAuth": []}],
    }


DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("linkflow_openapi", dict)


async def openapi(request: web.Request) -> web.Response:
    return respond(request.app[DOCUMENT])


ROUTE = Route("GET", OPENAPI_PATH, openapi, "This OpenAPI document", auth=False, tag="operations")


def add_openapi_route(app: web.Application, routes: list[Route]) -> None:
    """Serve the document of `routes` (plus its own route) at /api/v1/openapi.json."""
    app[DOCUMENT] = build_document([*routes, ROUTE])
    app.router.add_route(ROUTE.method, ROUTE.path, ROUTE.handler)
