"""A lean HTTP/1.1 load generator on raw asyncio streams (keep-alive, pre-built requests).

Python HTTP clients cost more CPU per request than the gateway we measure; on a 2-core
machine shared by load generator, upstream and gateway that would swamp the result. This
one sends pre-encoded bytes and parses only the status line, the headers it needs and the
body length, so it adds tens of microseconds, not hundreds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Sample:
    latency_s: list[float] = field(default_factory=list)
    ttfb_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latency_s)


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Connection: keep-alive",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader, started: float) -> tuple[int, float]:
    """Read one response; return (status, time of the first body byte)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length >= 0:
        if length:
            await reader.readexactly(length)
        return status, time.perf_counter()
    if not chunked:
        raise RuntimeError("response without length")
    first_body: float | None = None
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        await reader.readexactly(size + 2)
        if first_body is None:
            first_body = time.perf_counter()
    return status, first_body or time.perf_counter()


async def run(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 20,
) -> Sample:
    """Send ``request`` over ``concurrency`` keep-alive connections, either ``requests`` in
    all or for ``duration_s`` seconds; latency and first-body-byte times per request."""
    sample = Sample()
    remaining = [requests if requests is not None else 1 << 62]
    stop_at = [0.0]

    async def worker(measure: bool, quota: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while quota[0] > 0 and (
                not measure or not stop_at[0] or time.perf_counter() < stop_at[0]
            ):
                quota[0] -= 1
                started = time.perf_counter()
                writer.write(request)
                try:
                    status, first = await _read_response(reader, started)
                except (asyncio.IncompleteReadError, ConnectionError):
                    sample.errors += 1
                    return
                done = time.perf_counter()
                if not measure:
                    continue
                if status != 200:
                    sample.errors += 1
                    continue
                sample.latency_s.append(done - started)
                sample.ttfb_s.append(first - started)
        finally:
            writer.close()

    await asyncio.gather(
        *(worker(False, [max(warmup // concurrency, 1)]) for _ in range(concurrency))
    )
    start = time.perf_counter()
    if duration_s is not None:
        stop_at[0] = start + duration_s
    await asyncio.gather(*(worker(True, remaining) for _ in range(concurrency)))
    sample.elapsed_s = time.perf_counter() - start
    return sample
