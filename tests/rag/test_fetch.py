"""The SSRF guard of URL ingestion. Refused addresses are refused before any connection
(nothing is ever sent to them); DNS answers come from a stub at the resolver seam, and
the one server actually fetched from runs on loopback, allowed by the test-only setting."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from polymodal.rag.errors import DocumentTooLarge, FetchFailed, UrlRefused
from polymodal.rag.fetch import FetchPolicy, fetch, refusal

LOOPBACK = FetchPolicy.networks(["127.0.0.1/32"])
BODY = b"<html><body><p>hello from loopback</p></body></html>"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        routes = {
            "/page": (200, BODY),
            "/to-private": (302, "http://10.1.2.3/admin"),
            "/to-name": (302, "http://internal.example/secret"),
            "/to-page": (301, "/page"),
            "/loop": (302, "/loop"),
            "/big": (200, b"x" * 5000),
            "/missing": (404, b"nope"),
        }
        status, payload = routes.get(self.path, (404, b""))
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", str(payload))
            self.end_headers()
            return
        assert isinstance(payload, bytes)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hosts = []  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def dns(answers: dict[str, list[str]]) -> Any:
    """A resolver stub: name -> addresses; records what was asked."""
    asked: list[str] = []

    async def lookup(host: str, port: int) -> list[tuple[int, str]]:
        asked.append(host)
        if host not in answers:
            raise OSError("NXDOMAIN")
        return [(10 if ":" in a else 2, a) for a in answers[host]]

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("100.64.0.1", "not a public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_refused_addresses(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None and why in reason


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.0.0.1:8080/x", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("ftp://example.com/file.txt", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:pw@example.com/", "credentials"),
    ],
)
async def test_refused_urls(url: str, words: str) -> None:
    lookup = dns({})
    with pytest.raises(UrlRefused) as e:
        await fetch(url, FetchPolicy(), lookup=lookup)
    assert words in e.value.message and e.value.status == 422
    assert lookup.asked == []  # refused on sight: no lookup, no connection


async def test_dns_answer_inside_our_network_is_refused() -> None:
    lookup = dns({"innocent.example": ["10.9.8.7"]})
    with pytest.raises(UrlRefused, match=r"'innocent\.example' resolves to 10\.9\.8\.7"):
        await fetch("http://innocent.example/doc", FetchPolicy(), lookup=lookup)
    # One private address among public ones refuses the name too.
    lookup = dns({"mixed.example": ["93.184.216.34", "192.168.0.10"]})
    with pytest.raises(UrlRefused, match=r"192\.168\.0\.10"):
        await fetch("https://mixed.example/doc", FetchPolicy(), lookup=lookup)
    lookup = dns({"v6.example": ["::1"]})
    with pytest.raises(UrlRefused, match="loopback"):
        await fetch("http://v6.example/", FetchPolicy(), lookup=lookup)


async def test_fetch_connects_to_the_checked_address_with_the_name_as_host(
    server: ThreadingHTTPServer,
) -> None:
    port = server.server_port
    lookup = dns({"docs.example": ["127.0.0.1"]})
    got = await fetch(
        f"http://docs.example:{port}/page", FetchPolicy(allow_networks=LOOPBACK), lookup=lookup
    )
    assert got.data == BODY and got.content_type == "text/html"
    assert server.hosts[-1] == f"docs.example:{port}"  # type: ignore[attr-defined]
    # Without the test allowlist the same answer is refused.
    with pytest.raises(UrlRefused):
        await fetch(f"http://docs.example:{port}/page", FetchPolicy(), lookup=lookup)


async def test_every_redirect_hop_is_checked(server: ThreadingHTTPServer) -> None:
    base = f"http://127.0.0.1:{server.server_port}"
    policy = FetchPolicy(allow_networks=LOOPBACK, max_redirects=3)
    with pytest.raises(UrlRefused, match=r"10\.1\.2\.3"):
        await fetch(base + "/to-private", policy, lookup=dns({}))
    lookup = dns({"internal.example": ["172.20.0.2"]})
    with pytest.raises(UrlRefused, match=r"internal\.example"):
        await fetch(base + "/to-name", policy, lookup=lookup)
    assert lookup.asked == ["internal.example"]
    got = await fetch(base + "/to-page", policy, lookup=dns({}))
    assert got.data == BODY and got.url == base + "/page"
    with pytest.raises(FetchFailed, match="more than 3 redirects"):
        await fetch(base + "/loop", policy, lookup=dns({}))


async def test_size_status_and_time_limits(server: ThreadingHTTPServer) -> None:
    base = f"http://127.0.0.1:{server.server_port}"
    with pytest.raises(DocumentTooLarge, match="4096"):
        await fetch(base + "/big", FetchPolicy(allow_networks=LOOPBACK, max_bytes=4096))
    with pytest.raises(FetchFailed, match="HTTP 404"):
        await fetch(base + "/missing", FetchPolicy(allow_networks=LOOPBACK))
    with pytest.raises(FetchFailed, match="could not fetch"):
        await fetch("http://nowhere.example/", FetchPolicy(), lookup=dns({}))


async def test_a_silent_server_hits_the_deadline() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        port = listener.getsockname()[1]
        policy = FetchPolicy(allow_networks=LOOPBACK, timeout_s=0.5)
        with pytest.raises(FetchFailed, match=r"within 0\.5s"):
            await fetch(f"http://127.0.0.1:{port}/", policy)
    finally:
        listener.close()
