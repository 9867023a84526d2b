"""Fetching a document from a URL without becoming a proxy into our own network (SSRF).

- Only ``http`` and ``https``.
- The host is resolved once (``getaddrinfo``), every address is checked with
  ``ipaddress``, and the connection goes to a checked address: the check is an aiohttp
  resolver, so the address aiohttp connects to is the one that passed (no second
  lookup a DNS-rebinding server could answer differently). TLS SNI and the Host header
  still carry the name. A literal IP in the URL is checked the same way.
- Refused: anything not globally routable (loopback, private 10/8 172.16/12 192.168/16,
  link-local incl. the cloud metadata address 169.254.169.254, CGNAT, multicast,
  reserved, unspecified, IPv6 ULA/link-local, IPv4-mapped forms of these).
- Redirects are followed by hand, at most ``max_redirects``, each hop checked again.
- The body is read up to ``max_bytes`` and the whole fetch has a deadline.

``allow_networks`` is a test-only escape (settings refuse it in production) so tests can
fetch from a server they run on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from polymodal.rag.errors import DocumentTooLarge, FetchFailed, UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> [(family, address)]; the seam tests replace to stub DNS.
Lookup = Callable[[str, int], Awaitable[list[tuple[int, str]]]]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CLOUD_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


async def system_lookup(host: str, port: int) -> list[tuple[int, str]]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [(int(family), str(sockaddr[0])) for family, _t, _p, _c, sockaddr in infos]


def refusal(address: IPAddress, allow: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be fetched from, or None when it may."""
    if any(address in net for net in allow):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, allow)
    if address in _CLOUD_METADATA:
        return "the cloud metadata address"
    for attr, what in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_unspecified", "an unspecified address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    ):
        if getattr(address, attr):
            return what
    if not address.is_global:
        return "not a public address"
    return None


class _Refused(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves, checks every address, and hands aiohttp only checked ones."""

    def __init__(self, lookup: Lookup, allow: Sequence[Network]) -> None:
        self._lookup = lookup
        self._allow = allow
        self.refused: str | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            found = await self._lookup(host, port)
        except OSError as e:
            raise OSError(f"cannot resolve {host}: {e}") from e
        if not found:
            raise OSError(f"cannot resolve {host}")
        results: list[ResolveResult] = []
        for fam, addr in found:
            ip = ipaddress.ip_address(addr.split("%")[0])
            why = refusal(ip, self._allow)
            if why is not None:
                # One bad address refuses the host: a name that also points inside our
                # network is not something to connect to on a lucky pick.
                self.refused = f"'{host}' resolves to {ip}, {why}"
                raise _Refused(self.refused)
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(ip),
                    port=port,
                    family=fam,
                    proto=socket.IPPROTO_TCP,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        return results

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_redirects: int = 5
    max_bytes: int = 8 * 1024 * 1024
    allow_networks: tuple[Network, ...] = ()

    @staticmethod
    def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _check_url(url: str, allow: Sequence[Network]) -> tuple[str, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UrlRefused(f"url: {url!r} is not a valid URL.", param="url") from e
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(
            f"url: only http and https URLs can be fetched, not '{parts.scheme or 'none'}'.",
            param="url",
        )
    host = parts.hostname
    if not host:
        raise UrlRefused(f"url: {url!r} has no host.", param="url")
    if parts.username or parts.password:
        raise UrlRefused("url: URLs with credentials are not fetched.", param="url")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:  # aiohttp skips the resolver for literals: check here
        why = refusal(literal, allow)
        if why is not None:
            raise UrlRefused(f"url: {host} is {why}; refused.", param="url")
    del port
    return parts.scheme, host


async def fetch(url: str, policy: FetchPolicy, *, lookup: Lookup = system_lookup) -> Fetched:
    """GET ``url`` under the guard; 4xx errors (`UrlRefused`, `FetchFailed`,
    `DocumentTooLarge`) name what went wrong."""
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s, sock_connect=policy.connect_timeout_s)
    current = url
    try:
        async with asyncio.timeout(policy.timeout_s):
            for _hop in range(policy.max_redirects + 1):
                _check_url(current, policy.allow_networks)
                resolver = GuardedResolver(lookup, policy.allow_networks)
                # A connector per hop: no pooled connection, no DNS cache, no env proxy.
                connector = aiohttp.TCPConnector(
                    resolver=resolver, use_dns_cache=False, force_close=True
                )
                async with aiohttp.ClientSession(
                    connector=connector, timeout=timeout, trust_env=False
                ) as session:
                    try:
                        response_cm = session.get(
                            current,
                            allow_redirects=False,
                            headers={"User-Agent": "polymodal-ingest/1", "Accept": "*/*"},
                        )
                        async with response_cm as response:
                            if response.status in _REDIRECTS:
                                location = response.headers.get("Location")
                                if not location:
                                    raise FetchFailed(
                                        f"url: {current} redirected without a Location.",
                                        param="url",
                                    )
                                current = urljoin(current, location)
                                continue
                            if response.status >= 400:
                                raise FetchFailed(
                                    f"url: {current} answered HTTP {response.status}.",
                                    param="url",
                                )
                            data = await _read_limited(response, policy.max_bytes, current)
                            return Fetched(
                                url=current,
                                content_type=response.headers.get("Content-Type", ""),
                                data=data,
                            )
                    except aiohttp.ClientError as e:
                        if resolver.refused:
                            raise UrlRefused(
                                f"url: {resolver.refused}; refused.", param="url"
                            ) from e
                        raise FetchFailed(
                            f"url: could not fetch {current}: {type(e).__name__}.", param="url"
                        ) from e
            raise FetchFailed(
                f"url: more than {policy.max_redirects} redirects from {url}.", param="url"
            )
    except TimeoutError as e:
        raise FetchFailed(
            f"url: {current} did not answer within {policy.timeout_s:g}s.", param="url"
        ) from e


async def _read_limited(response: Any, max_bytes: int, url: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DocumentTooLarge(f"url: {url} is {declared} bytes; the limit is {max_bytes}.")
    chunks: list[bytes] = []
    size = 0
    async for piece in response.content.iter_chunked(64 * 1024):
        size += len(piece)
        if size > max_bytes:
            raise DocumentTooLarge(f"url: {url} is larger than the limit of {max_bytes} bytes.")
        chunks.append(piece)
    return b"".join(chunks)
