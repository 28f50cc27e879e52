"""Unit tests for infra.outbound: the forbidden-address table and the URL pre-flight."""

from __future__ import annotations

import pytest

from infra.outbound import ForbiddenTarget, InvalidTarget, check_url, is_forbidden_address

ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700::1",
    "2001:4860:4860::8888",
    "::ffff:93.184.216.34",  # IPv4-mapped public address
    "2002:5db8:d822::1",  # 6to4 embedding 93.184.216.34
    "64:ff9b::5db8:d822",  # NAT64 of a public address
    "[2606:4700::1]",
]

FORBIDDEN = [
    # loopback
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    # private
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "fc00::1",
    "fd12:3456:789a::1",
    # link-local / cloud metadata
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "fe80::1%eth0",
    # unspecified
    "0.0.0.0",
    "0.1.2.3",
    "::",
    # multicast
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",
    # reserved / broadcast / special purpose
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.1",
    "198.18.0.1",
    # carrier-grade NAT
    "100.64.0.1",
    "100.127.255.254",
    # IPv4-mapped / compatible forms of forbidden v4
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    # 6to4, Teredo and NAT64 embedding forbidden v4
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "64:ff9b::7f00:1",
    # site-local (deprecated) and bracketed literals
    "fec0::1",
    "[::1]",
    # garbage fails closed
    "not-an-ip",
    "",
]


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_addresses_are_allowed(ip: str) -> None:
    assert is_forbidden_address(ip) is False


@pytest.mark.parametrize("ip", FORBIDDEN)
def test_internal_addresses_are_forbidden(ip: str) -> None:
    assert is_forbidden_address(ip) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://017700000001/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "https://10.1.2.3/x",
    ],
)
def test_check_url_refuses_internal_literals(url: str) -> None:
    with pytest.raises(ForbiddenTarget):
        check_url(url, allow_private=False)
    assert check_url(url, allow_private=True).raw_host


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "example.com/path", "http:///x"],
)
def test_check_url_refuses_invalid(url: str) -> None:
    with pytest.raises(InvalidTarget):
        check_url(url, allow_private=False)
    with pytest.raises(InvalidTarget):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["https://example.com/a?b=1", "http://93.184.216.34/", "http://[2606:4700::1]:8080/"]
)
def test_check_url_allows_public(url: str) -> None:
    assert str(check_url(url, allow_private=False)) == url
