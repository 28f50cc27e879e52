"""What every route handler of the gateway shares: the application key under which the
`Container` lives, and JSON answers. Imported by the modules of `gateways.http` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from functools import partial
from typing import Any
from uuid import UUID

from aiohttp import web

from gateways.bootstrap import Container

CONTAINER: web.AppKey[Container] = web.AppKey("linkflow_container", Container)


def container(request: web.Request) -> Container:
    return request.app[CONTAINER]


def _default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_dumps = partial(json.dumps, default=_default, separators=(",", ":"))


def respond(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)
