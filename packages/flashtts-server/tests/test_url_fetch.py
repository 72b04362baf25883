"""The address check behind reference-audio URLs, on the function itself (no request leaves loopback)."""

from __future__ import annotations

import pytest
from flashtts_core.errors import InvalidRequest
from flashtts_server.url_fetch import fetch_url, is_public_address


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",
        "ff02::1",
        "192.0.2.1",
        "not-an-ip",
    ],
)
def test_internal_and_reserved_addresses_are_refused(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1/a.wav",
        "http://2130706433/a.wav",
        "http://[::1]:9/a.wav",
        "https://localhost/a.wav",
        "http://0x7f000001/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_loopback_spellings_are_refused_before_any_connection(url):
    with pytest.raises(InvalidRequest) as err:
        await fetch_url(url, timeout=5, max_bytes=1000)
    assert err.value.code == "url_refused"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a",
        "file:///etc/passwd",
        "http:///nohost",
        "http://user:pw@127.0.0.1/",
        "javascript:alert(1)",
        "http://[::1/",
        "http://" + "a" * 64 + ".example/a.wav",  # a DNS label over 63 characters (was a 500)
        "http://a..example/a.wav",
    ],
)
async def test_malformed_and_non_http_urls_are_refused(url):
    with pytest.raises(InvalidRequest):
        await fetch_url(url, timeout=5, max_bytes=1000, allow_private=True)
