"""The ``http_request`` node executor: send one outbound HTTP request and shape its result.

Imported by the worker (engine/worker). Depends on infra.outbound for the SSRF guard (the session
passed in must come from ``infra.outbound.make_session`` with the same ``allow_private``) and on
domain.json_limits for the nesting depth of parsed responses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

from domain.json_limits import too_deep
from infra.outbound import (
    ForbiddenTarget,
    InvalidTarget,
    check_url,
    is_guarded_session,
)

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_REDIRECTS", "NodeError", "run_http_request"]

DEFAULT_TIMEOUT_S = 300.0
MAX_REDIRECTS = 5
ERROR_BODY_LIMIT = 4 * 1024
_CHUNK = 64 * 1024
# The request runs under `asyncio.timeout(total)`, which bounds connecting, sending and reading
# the body together: aiohttp's own timers (a second set per request) are switched off.
_BOUNDED_OUTSIDE = aiohttp.ClientTimeout()


class NodeError(Exception):
    """A node failed; ``error`` is the failure payload recorded on the execution.

    ``error`` has ``type`` and ``message`` and, for HTTP status failures, ``status_code`` and
    ``body``. ``retryable`` tells the worker whether the node's retry policy applies.
    """

    def __init__(
        self,
        type_: str,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{type_}: {message}")
        self.error: dict[str, Any] = {"type": type_, "message": message}
        if status_code is not None:
            self.error["status_code"] = status_code
            self.error["body"] = body
        self.retryable = retryable


def _query_items(query: Any) -> list[tuple[str, str]]:
    if not query:
        return []
    if not isinstance(query, Mapping):
        raise NodeError("invalid_request", "query must be an object", retryable=False)
    items: list[tuple[str, str]] = []
    for key, value in query.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                items.append((str(key), "true" if item else "false"))
            elif isinstance(item, str | int | float):
                items.append((str(key), str(item)))
            else:
                items.append((str(key), json.dumps(item, separators=(",", ":"))))
    return items


def _request_headers(headers: Any) -> CIMultiDict[str]:
    if not headers:
        return CIMultiDict()
    if not isinstance(headers, Mapping):
        raise NodeError("invalid_request", "headers must be an object", retryable=False)
    return CIMultiDict((str(k), str(v)) for k, v in headers.items() if v is not None)


def _encode_body(body: Any, headers: CIMultiDict[str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return body.encode("utf-8")
    try:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise NodeError(
            "invalid_request", f"body is not JSON-serialisable: {exc}", retryable=False
        ) from exc
    headers.setdefault("Content-Type", "application/json")
    return data


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    too_large = NodeError(
        "response_too_large", f"response body exceeds {limit} bytes", retryable=False
    )
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    if response.content_length is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # what it reads is the length checked above
    buf = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        buf.extend(chunk)
        if len(buf) > limit:
            raise too_large
    return bytes(buf)


def _decode(raw: bytes, response: aiohttp.ClientResponse) -> str:
    try:
        return raw.decode(response.charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _too_deep(max_depth: int, where: str) -> NodeError:
    return NodeError(
        "response_too_deep",
        f"the response body is nested deeper than {max_depth} levels (at {where})",
        retryable=False,
    )


def _parse_body(text: str, content_type: str, max_depth: int) -> Any:
    """The body as JSON when its content type says so, or when it looks like an object or an
    array (else the text). Parsed JSON nested deeper than `max_depth` levels fails the node
    with `response_too_deep` (also when it is too deep for the parser itself)."""
    is_json_type = content_type == "application/json" or content_type.endswith("+json")
    stripped = text.strip()
    if is_json_type and not stripped:
        return None
    # Without a JSON content type only objects/arrays are parsed, so text such as "123" stays text.
    if is_json_type or stripped[:1] in ("{", "["):
        try:
            body = json.loads(text)
        except RecursionError:
            raise _too_deep(max_depth, "body") from None
        except ValueError:
            return text
        where = too_deep(body, max_depth)
        if where is not None:
            raise _too_deep(max_depth, f"body{where}" if where.startswith("[") else f"body.{where}")
        return body
    return text


def _response_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _error_body(body: Any, text: str) -> Any:
    if not isinstance(body, str):
        serialised = json.dumps(body, ensure_ascii=False)
        if len(serialised.encode("utf-8")) <= ERROR_BODY_LIMIT:
            return body
        body = text
    encoded = body.encode("utf-8")
    if len(encoded) <= ERROR_BODY_LIMIT:
        return body
    return encoded[:ERROR_BODY_LIMIT].decode("utf-8", errors="ignore")


def _forbidden_in(exc: BaseException) -> ForbiddenTarget | None:
    """The ForbiddenTarget behind ``exc`` (aiohttp wraps socket-level refusals), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ForbiddenTarget):
            return current
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, ForbiddenTarget):
            return os_error
        current = current.__cause__ or current.__context__
    return None


async def run_http_request(
    config: Mapping[str, Any],
    timeout_s: float | None,
    session: aiohttp.ClientSession,
    allow_private: bool,
    max_response_bytes: int = 10 * 1024 * 1024,
    *,
    max_depth: int = 64,
) -> dict[str, Any]:
    """Run an ``http_request`` node with an already-rendered ``config``.

    ``config``: ``{method="GET", url, headers={}, query={}, body=None, fail_on_status=True}``.
    Returns ``{status_code, headers (lower-cased names), body}``; raises :class:`NodeError`.
    Redirects are followed (at most ``MAX_REDIRECTS``); every hop is guarded by the session.
    A JSON body nested deeper than ``max_depth`` levels fails with ``response_too_deep``.
    """
    method = str(config.get("method") or "GET").upper()
    url = config.get("url")
    if not isinstance(url, str) or not url.strip():
        raise NodeError("invalid_url", "url must be a non-empty string", retryable=False)
    try:
        target = check_url(url.strip(), allow_private)
    except InvalidTarget as exc:
        raise NodeError("invalid_url", str(exc), retryable=False) from exc
    except ForbiddenTarget as exc:
        raise NodeError("forbidden_target", str(exc), retryable=False) from exc
    if not allow_private and not is_guarded_session(session):
        raise RuntimeError("http_request needs a session from make_session(allow_private=False)")

    headers = _request_headers(config.get("headers"))
    params = _query_items(config.get("query"))
    data = _encode_body(config.get("body"), headers)
    fail_setting = config.get("fail_on_status")
    fail_on_status = True if fail_setting is None else bool(fail_setting)
    total = float(timeout_s) if timeout_s else DEFAULT_TIMEOUT_S

    try:
        async with asyncio.timeout(total):
            async with session.request(
                method,
                target,
                headers=headers,
                params=params or None,
                data=data,
                allow_redirects=True,
                max_redirects=MAX_REDIRECTS + 1,  # aiohttp counts the refused hop too
                timeout=_BOUNDED_OUTSIDE,
            ) as response:
                raw = await _read_capped(response, max_response_bytes)
                status = response.status
                text = _decode(raw, response)
                body = _parse_body(text, response.content_type, max_depth)
                result = {
                    "status_code": status,
                    "headers": _response_headers(response),
                    "body": body,
                }
    except NodeError:
        raise
    except Exception as exc:
        raise _classify(exc, total) from exc

    if status >= 400 and fail_on_status:
        raise NodeError(
            "http_status",
            f"HTTP {status}",
            retryable=True,
            status_code=status,
            body=_error_body(body, text),
        )
    return result


def _classify(exc: Exception, total: float) -> NodeError:
    forbidden = _forbidden_in(exc)
    if forbidden is not None:
        return NodeError("forbidden_target", str(forbidden), retryable=False)
    if isinstance(exc, TimeoutError):
        return NodeError("timeout", f"request timed out after {total:g} s", retryable=True)
    if isinstance(exc, InvalidTarget | aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return NodeError("invalid_url", str(exc) or type(exc).__name__, retryable=False)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return NodeError(
            "too_many_redirects", f"more than {MAX_REDIRECTS} redirects", retryable=False
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return NodeError("connection_error", str(exc) or type(exc).__name__, retryable=True)
    if isinstance(exc, ValueError | TypeError):
        return NodeError("invalid_request", str(exc), retryable=False)
    raise exc
