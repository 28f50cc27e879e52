"""Integration tests for the http_request node against a local aiohttp server (no DB/Redis)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

import infra.outbound as outbound
from engine.nodes.http_request import NodeError, run_http_request
from infra.outbound import ForbiddenTarget, make_session

LARGE = 2 * 1024 * 1024
LIMIT = 1024 * 1024


def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Server:
    base: str
    port: int
    release: asyncio.Event


def _app(release: asyncio.Event, port_box: list[int]) -> web.Application:
    async def json_ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "n": 1})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def json_in_text(request: web.Request) -> web.Response:
        return web.Response(text='{"a": [1, 2]}', content_type="text/plain")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type"),
                "x_test": request.headers.get("X-Test"),
                "body": await request.text(),
            }
        )

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="missing " + "x" * 10_000)

    async def server_error(request: web.Request) -> web.Response:
        return web.json_response({"error": "boom"}, status=500)

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(release.wait(), timeout=2.0)
        except TimeoutError:
            pass
        return web.Response(text="late")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"a" * LARGE, content_type="application/octet-stream")

    async def large_gzip(request: web.Request) -> web.Response:
        # A few KB on the wire (its Content-Length), LARGE bytes once decompressed.
        return web.Response(
            body=gzip.compress(b"c" * LARGE),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )

    async def large_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"b" * (64 * 1024)
        for _ in range(LARGE // len(chunk)):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def deep(request: web.Request) -> web.Response:
        depth = int(request.query.get("depth", "990"))
        status = int(request.query.get("status", "200"))
        kind = request.query.get("type", "application/json")
        return web.Response(status=status, text="[" * depth + "1" + "]" * depth, content_type=kind)

    async def deep_object(request: web.Request) -> web.Response:
        return web.json_response({"data": {"items": [{"x": nested_lists(70)}]}})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/json")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def redirect_localhost(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{port_box[0]}/json")

    app = web.Application()
    app.router.add_get("/json", json_ok)
    app.router.add_get("/text", text)
    app.router.add_get("/json-in-text", json_in_text)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/404", not_found)
    app.router.add_get("/500", server_error)
    app.router.add_get("/slow", slow)
    app.router.add_get("/large", large)
    app.router.add_get("/large-chunked", large_chunked)
    app.router.add_get("/large-gzip", large_gzip)
    app.router.add_get("/deep", deep)
    app.router.add_get("/deep-object", deep_object)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/redirect-localhost", redirect_localhost)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[Server]:
    release = asyncio.Event()
    port_box: list[int] = [0]
    runner = web.AppRunner(_app(release, port_box), shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    port_box[0] = port
    try:
        yield Server(base=f"http://127.0.0.1:{port}", port=port, release=release)
    finally:
        release.set()
        await runner.cleanup()


async def _run(
    config: dict[str, Any],
    *,
    allow_private: bool = True,
    timeout_s: float | None = 10.0,
    max_response_bytes: int = 10 * 1024 * 1024,
    **extra: Any,
) -> dict[str, Any]:
    async with make_session(allow_private) as session:
        return await run_http_request(
            config,
            timeout_s,
            session,
            allow_private,
            max_response_bytes=max_response_bytes,
            **extra,
        )


async def _error(config: dict[str, Any], **kwargs: Any) -> NodeError:
    with pytest.raises(NodeError) as info:
        await _run(config, **kwargs)
    return info.value


async def test_json_body_is_parsed(server: Server) -> None:
    result = await _run({"url": f"{server.base}/json"})
    assert result["status_code"] == 200
    assert result["body"] == {"ok": True, "n": 1}
    assert result["headers"]["content-type"].startswith("application/json")


async def test_text_body(server: Server) -> None:
    result = await _run({"url": f"{server.base}/text", "method": "get"})
    assert result["body"] == "hello"
    assert result["headers"]["content-type"].startswith("text/plain")


async def test_text_that_parses_as_json(server: Server) -> None:
    result = await _run({"url": f"{server.base}/json-in-text"})
    assert result["body"] == {"a": [1, 2]}


async def test_request_shape(server: Server) -> None:
    result = await _run(
        {
            "method": "POST",
            "url": f"{server.base}/echo",
            "headers": {"X-Test": "yes"},
            "query": {"a": 1, "flag": True, "many": ["x", "y"]},
            "body": {"hello": "wörld"},
        }
    )
    echoed = result["body"]
    assert echoed["method"] == "POST"
    assert echoed["query"] == {"a": "1", "flag": "true", "many": "x"}
    assert echoed["content_type"] == "application/json"
    assert echoed["x_test"] == "yes"
    assert echoed["body"] == '{"hello":"wörld"}'

    text = await _run({"method": "PUT", "url": f"{server.base}/echo", "body": "plain"})
    assert text["body"]["content_type"].startswith("text/plain")
    assert text["body"]["body"] == "plain"

    empty = await _run({"method": "DELETE", "url": f"{server.base}/echo", "body": None})
    assert empty["body"]["body"] == ""


async def test_404_is_retryable_http_status(server: Server) -> None:
    err = await _error({"url": f"{server.base}/404"})
    assert err.retryable is True
    assert err.error["type"] == "http_status"
    assert err.error["message"] == "HTTP 404"
    assert err.error["status_code"] == 404
    assert err.error["body"].startswith("missing")
    assert len(err.error["body"].encode()) <= 4096


async def test_500_keeps_json_body(server: Server) -> None:
    err = await _error({"url": f"{server.base}/500"})
    assert err.error["status_code"] == 500
    assert err.error["body"] == {"error": "boom"}


async def test_fail_on_status_false_returns_result(server: Server) -> None:
    result = await _run({"url": f"{server.base}/404", "fail_on_status": False})
    assert result["status_code"] == 404


async def test_timeout_is_honoured(server: Server) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    err = await _error({"url": f"{server.base}/slow"}, timeout_s=0.3)
    elapsed = loop.time() - started
    assert err.error["type"] == "timeout"
    assert err.retryable is True
    assert elapsed < 1.5


@pytest.mark.parametrize("path", ["/large", "/large-chunked", "/large-gzip"])
async def test_large_body_is_refused(server: Server, path: str) -> None:
    err = await _error({"url": f"{server.base}{path}"}, max_response_bytes=LIMIT)
    assert err.error["type"] == "response_too_large"
    assert err.retryable is False


async def test_large_body_within_limit(server: Server) -> None:
    result = await _run({"url": f"{server.base}/large"}, max_response_bytes=LARGE)
    assert len(result["body"]) == LARGE


async def test_redirect_is_followed(server: Server) -> None:
    result = await _run({"url": f"{server.base}/redirect"})
    assert result["body"] == {"ok": True, "n": 1}


async def test_redirect_loop_is_bounded(server: Server) -> None:
    err = await _error({"url": f"{server.base}/loop"})
    assert err.error["type"] == "too_many_redirects"
    assert err.retryable is False


async def test_connection_refused_is_retryable() -> None:
    # Port 9 (discard) on loopback is closed in test environments.
    err = await _error({"url": "http://127.0.0.1:9/"}, timeout_s=5)
    assert err.error["type"] == "connection_error"
    assert err.retryable is True


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/file", "file:///etc/passwd", "not a url", "", "http:///nohost"],
)
async def test_invalid_url(url: str) -> None:
    err = await _error({"url": url}, allow_private=False)
    assert err.error["type"] == "invalid_url"
    assert err.retryable is False


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]"],
)
async def test_private_targets_refused(server: Server, host: str) -> None:
    err = await _error({"url": f"http://{host}:{server.port}/json"}, allow_private=False)
    assert err.error["type"] == "forbidden_target"
    assert err.retryable is False


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_targets_allowed_when_configured(server: Server, host: str) -> None:
    result = await _run({"url": f"http://{host}:{server.port}/json"}, allow_private=True)
    assert result["body"] == {"ok": True, "n": 1}


async def test_guarded_session_refuses_without_preflight(server: Server) -> None:
    """The connector itself refuses, for callers that skip check_url."""
    async with make_session(allow_private=False) as session:
        # IP literal: aiohttp skips the resolver; the socket factory refuses the connect.
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            async with session.get(f"{server.base}/json"):
                pass
        assert isinstance(info.value.os_error, ForbiddenTarget)
        # Host name: the resolver refuses.
        with pytest.raises(ForbiddenTarget):
            async with session.get(f"http://localhost:{server.port}/json"):
                pass


async def test_redirect_hop_is_checked(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each redirect target is checked before it is requested (first hop made allowed)."""
    monkeypatch.setattr(outbound, "is_forbidden_address", lambda ip: False)
    err = await _error({"url": f"{server.base}/redirect-localhost"}, allow_private=False)
    assert err.error["type"] == "forbidden_target"
    assert "localhost" in err.error["message"]


async def test_unguarded_session_is_rejected(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RuntimeError):
            await run_http_request({"url": "https://example.com/"}, 1.0, session, False)


# ---------------------------------------------------------------- nesting depth


@pytest.mark.parametrize(
    "query",
    [
        "",  # 990 nested arrays: too deep for json.loads itself (the RecursionError)
        "?depth=200",  # parsed, then refused by the limit
        "?depth=990&type=text/plain",  # looks like JSON: parsed as such, so checked too
        "?depth=990&status=500",  # an error answer's body as well
    ],
)
async def test_a_response_nested_too_deep_fails_the_node_without_retry(
    server: Server, query: str
) -> None:
    error = await _error({"url": f"{server.base}/deep{query}"})
    assert error.error["type"] == "response_too_deep"
    assert "64 levels" in error.error["message"]
    assert error.retryable is False


async def test_the_error_names_where_the_response_is_too_deep(server: Server) -> None:
    error = await _error({"url": f"{server.base}/deep-object"})
    # data 2, items 3, items[0] 4, x 5: the 65th level is x + 60 x [0]
    assert f"at body.data.items[0].x{'[0]' * 60}" in error.error["message"]
    error = await _error({"url": f"{server.base}/deep?depth=5"}, max_depth=3)
    assert "3 levels (at body[0][0][0])" in error.error["message"]


async def test_a_response_nested_50_levels_is_parsed(server: Server) -> None:
    result = await _run({"url": f"{server.base}/deep?depth=50"})
    assert result["body"] == nested_lists(50)
    result = await _run({"url": f"{server.base}/deep?depth=64"})
    assert result["body"] == nested_lists(64)
