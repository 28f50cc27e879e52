"""Fixtures of the integration tests that drive the HTTP API in this process: `api`, a signed-up
user of the gateway application served by aiohttp's TestServer on the test's own database (no
relay or projector: a test starts the roles it needs with `stack.roles`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from api import Api
from loop_guard import no_socket_left_registered  # noqa: F401 (an autouse fixture)

from gateways.bootstrap import bootstrap
from gateways.http.app import make_app
from infra.settings import Settings


@pytest.fixture
async def api(fresh_settings: Settings) -> AsyncIterator[Api]:
    container = await bootstrap(fresh_settings)
    server = TestServer(make_app(container))
    await server.start_server()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            api = Api(str(server.make_url("/")), session)
            await api.sign_up()
            yield api
    finally:
        await server.close()
        await container.close()
