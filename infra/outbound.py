"""Outbound HTTP safety: the SSRF guard for requests LinkFlow makes on behalf of workflows.

Anything that sends user-controlled HTTP requests (the worker's ``http_request`` node) may import
this module; it imports nothing from the project.

How targets are guarded when ``allow_private`` is False (every layer refuses with
:class:`ForbiddenTarget`):

1. ``check_url`` (pre-flight, called by the node before sending): http/https only, a host is
   required, ``localhost``/``*.localhost`` are refused by name, and IP-literal hosts are checked
   directly -- including legacy numeric IPv4 spellings such as ``2130706433`` or ``0x7f.1``.
2. ``GuardedResolver``: every host *name* is resolved through it, and the whole lookup is refused
   when ANY returned address is forbidden. The connector only ever connects to addresses the
   resolver returned (and caches), so DNS rebinding cannot swap in an internal address later.
3. A ``socket_factory`` on the connector checks the exact socket address right before every
   ``connect()``. aiohttp skips the resolver for IP literals (``TCPConnector._resolve_host``), so
   this is what catches ``http://127.0.0.1/`` or ``http://[::1]/`` even for a caller that never
   called ``check_url``; it is the last line for every connection the session makes.
4. Redirects are followed by aiohttp (callers pass ``max_redirects=5``), but an
   ``on_request_redirect`` trace hook runs ``check_url`` on each ``Location`` before the next hop is
   requested; and because every hop connects through layers 2 and 3, a redirect to an internal
   host is refused even if it slipped past the hook. Following redirects in aiohttp (rather than
   by hand) keeps its method rewriting and cross-origin credential stripping.

The sessions use ``trust_env=False`` so no environment proxy can relay around the guard.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import weakref
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

__all__ = [
    "ForbiddenTarget",
    "GuardedResolver",
    "InvalidTarget",
    "check_url",
    "is_forbidden_address",
    "is_guarded_session",
    "make_session",
]

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Ranges refused outright, on top of what `ipaddress` flags as non-global.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: judge the embedded v4
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d form
# Hosts made only of digits, dots and hex digits with 0x prefixes may be legacy IPv4 spellings.
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)

_guarded_sessions: weakref.WeakKeyDictionary[aiohttp.ClientSession, bool] = (
    weakref.WeakKeyDictionary()
)


class ForbiddenTarget(Exception):
    """The request would reach a loopback, private, link-local or otherwise internal address."""


class InvalidTarget(ValueError):
    """The URL is malformed or uses a scheme other than http/https."""


class _ForbiddenSocketAddress(ForbiddenTarget, OSError):
    """Raised from the socket factory; an OSError so aiohttp wraps rather than loses it.

    aiohttp reports it as ``ClientConnectorError`` whose ``os_error`` is this exception.
    """


def _forbidden_v4(addr: ipaddress.IPv4Address) -> bool:
    return (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or addr in _CGNAT
    )


def _forbidden_v6(addr: ipaddress.IPv6Address) -> bool:
    embedded: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped is not None:
        embedded.append(addr.ipv4_mapped)
    if addr.sixtofour is not None:
        embedded.append(addr.sixtofour)
    if addr.teredo is not None:
        embedded.extend(addr.teredo)  # (server, client)
    if addr in _NAT64 or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        embedded.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if any(_forbidden_v4(v4) for v4 in embedded):
        return True
    if addr in _NAT64 or addr.ipv4_mapped is not None:
        return False  # a public v4 reached through NAT64 / a mapped public v4
    return (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_site_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def is_forbidden_address(ip: str) -> bool:
    """True when ``ip`` must not be contacted unless private networks are allowed.

    Refuses loopback, private (RFC 1918, fc00::/7), link-local (incl. 169.254.169.254, fe80::/10),
    unspecified, multicast, reserved and otherwise non-global ranges, carrier-grade NAT
    (100.64/10), and IPv6 forms embedding such a v4 address (IPv4-mapped/compatible, 6to4,
    Teredo, NAT64). Brackets and an IPv6 zone id are accepted. Unparseable input is refused.
    """
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return True  # fail closed
    if isinstance(addr, ipaddress.IPv4Address):
        return _forbidden_v4(addr)
    return _forbidden_v6(addr)


def _literal_address(host: str) -> str | None:
    """The IP address ``host`` denotes when it is an IP literal (any spelling), else None."""
    text = host.rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _LEGACY_V4.match(text):
        try:
            return socket.inet_ntoa(socket.inet_aton(text))
        except OSError:
            return None
    return None


def check_url(url: str | URL, allow_private: bool) -> URL:
    """Validate an outbound URL before sending; return it parsed.

    Raises :class:`InvalidTarget` for malformed URLs and non-http(s) schemes, and
    :class:`ForbiddenTarget` (when ``allow_private`` is False) for ``localhost`` names and
    IP literals in a forbidden range. Host names are checked later, at resolve time.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidTarget(f"invalid URL: {exc}") from exc
    if parsed.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidTarget(f"unsupported URL scheme {parsed.scheme!r}; use http or https")
    host = parsed.raw_host
    if not host:
        raise InvalidTarget("URL has no host")
    try:
        parsed.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise InvalidTarget(f"invalid URL port: {exc}") from exc
    if allow_private:
        return parsed
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise ForbiddenTarget(f"host {host!r} is a local name")
    literal = _literal_address(host)
    if literal is not None and is_forbidden_address(literal):
        raise ForbiddenTarget(f"address {literal} of host {host!r} is not allowed")
    return parsed


class GuardedResolver(AbstractResolver):
    """Resolver that refuses a host when any of its addresses is forbidden.

    Wraps aiohttp's ``ThreadedResolver`` (or ``inner``). With ``allow_private`` True it only
    delegates. Must be created inside a running event loop.
    """

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                if is_forbidden_address(result["host"]):
                    raise ForbiddenTarget(
                        f"host {host!r} resolves to forbidden address {result['host']}"
                    )
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohappyeyeballs socket factory: refuse the connect if the address is forbidden."""
    family, type_, proto, _, address = addr_info
    if is_forbidden_address(str(address[0])):
        raise _ForbiddenSocketAddress(f"connection to forbidden address {address[0]} refused")
    return socket.socket(family=family, type=type_, proto=proto)


async def _check_redirect(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    response = params.response
    location = response.headers.get("Location") or response.headers.get("URI")
    if not location:
        return
    try:
        check_url(response.url.join(URL(location)), allow_private=False)
    except (ForbiddenTarget, InvalidTarget, ValueError):
        response.close()
        raise


def make_session(allow_private: bool, limit: int = 100) -> aiohttp.ClientSession:
    """A ClientSession whose every connection goes through the guard (see module docstring).

    ``allow_private`` comes from the ``LINKFLOW_ALLOW_PRIVATE_NETWORK`` setting; with True the
    session is a plain one. Call from within a running event loop; close it when done.
    """
    if allow_private:
        connector = aiohttp.TCPConnector(limit=limit)
        session = aiohttp.ClientSession(connector=connector, trust_env=False)
    else:
        connector = aiohttp.TCPConnector(
            limit=limit,
            resolver=GuardedResolver(allow_private=False),
            socket_factory=_guarded_socket,
        )
        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(_check_redirect)
        session = aiohttp.ClientSession(connector=connector, trust_env=False, trace_configs=[trace])
    _guarded_sessions[session] = allow_private
    return session


def is_guarded_session(session: aiohttp.ClientSession) -> bool:
    """True when ``session`` came from ``make_session(allow_private=False)``."""
    return _guarded_sessions.get(session) is False
