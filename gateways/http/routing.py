"""The route table format: each routes module lists its routes as `Route` entries, which
`app.make_app` registers and `openapi` documents (one source for both). Imported by the modules
of `gateways.http` only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query or header parameter, for the OpenAPI document."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    location: Literal["query", "header"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    # The request body: a pydantic model (its JSON schema, minus `server_fields`), a JSON schema,
    # or None for "no body".
    body: type[BaseModel] | dict[str, Any] | None = None
    body_required: bool = True
    # Fields of `body` the gateway fills from the path, the token or headers (not the client).
    server_fields: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    auth: bool = True
    tag: str = "api"
    extra_responses: dict[int, str] = field(default_factory=dict)


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
