"""Reference audio by URL: http/https only, a timeout, a size cap, and no requests to internal addresses.

The host is resolved once, every address is checked, and the connection goes to a checked address
(with the original Host header and TLS server name), so a DNS answer that changes between the check
and the request (DNS rebinding) cannot reach an internal service. Redirects are followed by hand,
each target checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Optional
from urllib.parse import urljoin, urlsplit

import httpx
from flashtts_core.errors import InvalidRequest, PayloadTooLarge

MAX_REDIRECTS = 3


class URLRefused(InvalidRequest):
    """A reference-audio URL this server will not fetch (400)."""

    code = "url_refused"


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local,
    shared (CGNAT), reserved, multicast and unspecified ones, including IPv4-mapped IPv6 forms."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(str(mapped))
    return ip.is_global and not ip.is_multicast


def looks_like_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise URLRefused(f"cannot resolve host {host!r}: {exc.strerror}", param="url") from None
    except UnicodeError:  # the IDNA codec: a label longer than 63 characters, or an empty one ("a..b")
        raise URLRefused(f"invalid host name {host[:80]!r}", param="url") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _checked_target(url: str, allow_private: bool) -> tuple[str, str, str]:
    """(connect URL with an IP literal, Host header value, TLS server name) for a URL that may be fetched."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise URLRefused(f"invalid URL: {exc}", param="url") from None
    if parts.scheme not in ("http", "https"):
        raise URLRefused("only http and https URLs are allowed for reference audio", param="url")
    host = parts.hostname
    if not host:
        raise URLRefused("the URL has no host", param="url")
    if parts.username or parts.password:
        raise URLRefused("URLs with credentials are not allowed", param="url")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(host, port)
    if not allow_private:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused or not addresses:
            raise URLRefused(
                f"host {host!r} resolves to a loopback, private, link-local or reserved address ({', '.join(refused)}); "
                "the server refuses such URLs unless started with --allow_private_urls",
                param="url",
            )
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    connect_url = parts._replace(netloc=f"{literal}:{port}").geturl()
    return connect_url, parts.netloc.rsplit("@", 1)[-1], host


async def fetch_url(url: str, *, timeout: float, max_bytes: int, allow_private: bool = False) -> bytes:
    """The body of ``url``; 400 for a refused or failing URL, 413 when over ``max_bytes``."""
    try:
        return await asyncio.wait_for(_fetch(url, max_bytes, allow_private), timeout)
    except asyncio.TimeoutError:
        raise InvalidRequest(f"fetching the reference audio took longer than {timeout:g} s", param="url") from None


async def _fetch(url: str, max_bytes: int, allow_private: bool) -> bytes:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            connect_url, host_header, server_name = await _checked_target(url, allow_private)
            request = client.build_request(
                "GET",
                connect_url,
                headers={"Host": host_header, "Accept": "audio/*, */*"},
                extensions={"sni_hostname": server_name},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InvalidRequest(
                    f"could not fetch the reference audio: {type(exc).__name__}", param="url"
                ) from None
            try:
                if response.is_redirect:
                    location: Optional[str] = response.headers.get("location")
                    if not location:
                        raise InvalidRequest("the reference URL redirects without a Location", param="url")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise InvalidRequest(
                        f"could not fetch the reference audio: HTTP {response.status_code}", param="url"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise PayloadTooLarge(
                        f"the reference audio at the URL is larger than {max_bytes} bytes", param="url"
                    )
                parts: list[bytes] = []
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise PayloadTooLarge(
                            f"the reference audio at the URL is larger than {max_bytes} bytes", param="url"
                        )
                    parts.append(chunk)
                return b"".join(parts)
            finally:
                await response.aclose()
    raise InvalidRequest(f"the reference URL redirects more than {MAX_REDIRECTS} times", param="url")
