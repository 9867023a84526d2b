"""The process's one pooled HTTP client for upstream calls: aiohttp (HTTP/1.1 with
keep-alive), and httpx with HTTP/2 for the deployments that ask for it (``http2: true``).

Why aiohttp by default: measured on this project's 2-core machine, an httpx
`AsyncClient.post` to a loopback upstream costs about 1.3 ms of CPU (1.8 ms with HTTP/2),
aiohttp about 0.3 ms; the gateway's whole budget is about 1 ms. HTTP/2 pays off where a
connection is expensive (TLS to a distant provider, many concurrent streams on few
connections), so it is a per-deployment choice (bench/upstream_http2.py measures it).
Over ``https`` HTTP/2 is negotiated (ALPN) and falls back to HTTP/1.1; over plain
``http`` (a self-hosted server) it is spoken with prior knowledge.

Adapters speak to this small interface only, so they never see aiohttp or httpx types:
transport failures arrive as `UpstreamError`s that `providers.errors.from_transport` maps
onto the domain's error classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    import httpx

# Longest line `StreamResponse.lines` accepts. aiohttp's own default is twice its read
# buffer (512 KiB), and one SSE line is one whole event: a Gemini image part or a long
# tool-call argument can exceed that (httpx had no limit at all).
MAX_LINE_BYTES = 16 * 1024 * 1024


class UpstreamError(Exception):
    """A transport-level failure: ``kind`` is connect, timeout, disconnected or protocol."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamResponse:
    """An open streaming response. Read with `lines()` (SSE) or `read()`."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        raise NotImplementedError

    def chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def lines(self) -> AsyncIterator[list[str]]:
        """Decoded lines without their line ending (``\\n`` or ``\\r\\n``), in batches:
        every complete line of one read. A stream's events mostly arrive together, so the
        caller sets one deadline per read, not one per line (a timer each: measurable at
        a thousand requests a second)."""
        parts: list[bytes] = []  # an unfinished line, in pieces (no quadratic joins)
        size = 0
        async for raw in self.chunks():
            cut = raw.rfind(b"\n")
            if cut < 0:
                parts.append(raw)
                size += len(raw)
                if size > MAX_LINE_BYTES:
                    raise _too_long()
                continue
            head = b"".join([*parts, raw[: cut + 1]]) if parts else raw[: cut + 1]
            rest = raw[cut + 1 :]
            parts, size = ([rest], len(rest)) if rest else ([], 0)
            found = head.split(b"\n")[:-1]
            if len(head) > MAX_LINE_BYTES and any(len(line) > MAX_LINE_BYTES for line in found):
                raise _too_long()
            yield [_decode(line) for line in found]
        if parts:
            yield [_decode(b"".join(parts))]


class _AiohttpStream(StreamResponse):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _transport_error(e) from e

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            try:
                raw = await content.readany()
            except (TimeoutError, aiohttp.ClientError, HttpProcessingError) as e:
                raise _transport_error(e) from e
            if not raw:
                return
            yield raw


class _HttpxStream(StreamResponse):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        import httpx

        try:
            return await self._response.aread()
        except httpx.HTTPError as e:
            raise _httpx_error(e) from e

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        stream = self._response.aiter_bytes()
        while True:
            try:
                raw = await anext(stream)
            except StopAsyncIteration:
                return
            except httpx.HTTPError as e:
                raise _httpx_error(e) from e
            if raw:
                yield raw


def _too_long() -> UpstreamError:
    return UpstreamError("protocol", f"a line longer than {MAX_LINE_BYTES} bytes")


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


def _transport_error(error: BaseException) -> UpstreamError:
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError("timeout", type(error).__name__)
    if isinstance(error, aiohttp.ClientConnectorError):
        return UpstreamError("connect", type(error).__name__)
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return UpstreamError("disconnected", type(error).__name__)
    return UpstreamError("protocol", type(error).__name__)


def _httpx_error(error: BaseException) -> UpstreamError:
    import httpx

    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return UpstreamError("timeout", type(error).__name__)
    if isinstance(error, httpx.ConnectError):
        return UpstreamError("connect", type(error).__name__)
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return UpstreamError("disconnected", type(error).__name__)
    return UpstreamError("protocol", type(error).__name__)


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (the unit HTTP/2 is chosen for)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class Upstream:
    """One `aiohttp.ClientSession` per process, created on first use inside the loop, and
    (when some deployment asks for HTTP/2) an `httpx.AsyncClient` per scheme beside it."""

    def __init__(self, *, max_connections: int = 512, keepalive_s: float = 30.0) -> None:
        self._max = max_connections
        self._keepalive = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._http2: frozenset[str] = frozenset()
        self._h2: dict[str, httpx.AsyncClient] = {}

    def use_http2(self, urls: Iterable[str]) -> None:
        """Speak HTTP/2 to the origins of these base URLs (their deployments say
        ``http2: true``)."""
        self._http2 = frozenset(origin(u) for u in urls)

    def speaks_http2(self, url: str) -> bool:
        return bool(self._http2) and origin(url) in self._http2

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max, keepalive_timeout=self._keepalive, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, trust_env=False
            )
        return self._session

    def _h2_client(self, url: str) -> httpx.AsyncClient:
        scheme = urlsplit(url).scheme
        client = self._h2.get(scheme)
        if client is None or client.is_closed:
            import httpx

            client = httpx.AsyncClient(
                # Over TLS, ALPN negotiates h2 (or falls back); over plain http, h2 with
                # prior knowledge (http1=False): no upgrade dance.
                http1=scheme == "https",
                http2=True,
                limits=httpx.Limits(max_connections=self._max, keepalive_expiry=self._keepalive),
                trust_env=False,
                follow_redirects=False,
            )
            self._h2[scheme] = client
        return client

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_s: float,
        total_s: float,
    ) -> Response:
        if self.speaks_http2(url):
            return await self._post_h2(url, body, headers, connect_s=connect_s, total_s=total_s)
        timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)
        try:
            async with self._client().post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as r:
                data = await r.read()
                return Response(r.status, r.headers, data)
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _transport_error(e) from e

    async def _post_h2(
        self, url: str, body: bytes, headers: Mapping[str, str], *, connect_s: float, total_s: float
    ) -> Response:
        import httpx

        try:
            async with asyncio.timeout(total_s):
                r = await self._h2_client(url).post(
                    url,
                    content=body,
                    headers=dict(headers),
                    timeout=httpx.Timeout(None, connect=connect_s),
                )
        except (TimeoutError, httpx.HTTPError) as e:
            raise _httpx_error(e) from e
        return Response(r.status_code, r.headers, r.content)

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_s: float,
        first_byte_s: float,
    ) -> AsyncIterator[StreamResponse]:
        """POST and yield the response once its headers arrived (within ``first_byte_s``).
        Chunk deadlines are the caller's (see `providers.sse.events`)."""
        if self.speaks_http2(url):
            async with self._stream_h2(
                url, body, headers, connect_s=connect_s, first_byte_s=first_byte_s
            ) as h2_response:
                yield h2_response
            return
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=None)
        try:
            # The adaptive first-byte deadline already reflects this deployment's usual
            # connection set-up; connect_s bounds a connect on its own.
            async with asyncio.timeout(first_byte_s):
                response = await self._client().post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
        except (TimeoutError, aiohttp.ClientError) as e:
            raise _transport_error(e) from e
        try:
            yield _AiohttpStream(response)
        finally:
            response.close()

    @asynccontextmanager
    async def _stream_h2(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_s: float,
        first_byte_s: float,
    ) -> AsyncIterator[StreamResponse]:
        import httpx

        client = self._h2_client(url)
        request = client.build_request(
            "POST",
            url,
            content=body,
            headers=dict(headers),
            timeout=httpx.Timeout(None, connect=connect_s),
        )
        try:
            async with asyncio.timeout(first_byte_s):
                response = await client.send(request, stream=True)
        except (TimeoutError, httpx.HTTPError) as e:
            raise _httpx_error(e) from e
        try:
            yield _HttpxStream(response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for client in self._h2.values():
            await client.aclose()
        self._h2.clear()
