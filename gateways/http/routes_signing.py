"""The workspace's signing secret: what a callback receiver needs to verify LinkFlow's signed
POSTs (infra.signing). Derived from the deployment's secret key, never stored; the one secret the
API shows, to owners and admins only. `ROUTES` is the table `app.make_app` registers and
`openapi` documents. Imported by `gateways.http.app`.
"""

from __future__ import annotations

from aiohttp import web

from domain.roles import Action
from gateways.http.auth import workspace_access
from gateways.http.context import container, respond
from gateways.http.routing import Route
from infra.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, WINDOW_S


async def signing_secret(request: web.Request) -> web.Response:
    ws = await workspace_access(request, Action.READ_SIGNING_SECRET)
    answer = {
        "secret": container(request).box.signing_secret(str(ws)),
        "algorithm": "HMAC-SHA256",
        "headers": [TIMESTAMP_HEADER, SIGNATURE_HEADER],
        "signed_content": f"<{TIMESTAMP_HEADER}> + '.' + <raw body>",
        "tolerance_s": int(WINDOW_S),
    }
    return respond(answer, headers={"Cache-Control": "no-store"})


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/v1/workspaces/{ws}/signing-secret",
        signing_secret,
        "The secret that signs the workspace's callbacks (owners and admins)",
        tag="workspaces",
    ),
]
