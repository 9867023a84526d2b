"""What HTTP/2 costs the gateway per upstream call: the OpenAI adapter calling the fake
OpenAI provider through polymodal's upstream client, over HTTP/1.1 (aiohttp, keep-alive:
the default) and over HTTP/2 (httpx + h2: deployments marked ``http2: true``).

    .venv/bin/python bench/upstream_http2.py [--requests 2000] [--out upstream_http2]

The fake runs under hypercorn (it speaks both versions, cleartext, HTTP/2 by prior
knowledge) in its own process; the client's CPU time per call is the number that matters
on a busy gateway, latency is reported beside it. Loopback has no TLS handshakes or
distance to save, so this shows HTTP/2's cost, not its benefit on a real network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info
from stack import free_port, percentile, wait_http

from polymodal.domain.catalog import Deployment, Price
from polymodal.domain.chat import ChatRequest
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.http import Upstream
from polymodal.providers.openai import OpenAIProvider

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-h2"
DEADLINES = Deadlines(connect_s=2.0, first_byte_s=10.0, idle_s=10.0, total_s=10.0)


def serve(port: int) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from polymodal.testing.fakes.server import create_app

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    # Hypercorn ends a connection after 1,000 requests by default and drops the request in
    # flight when it does; real providers' GOAWAYs are handled by httpcore's pool.
    config.keep_alive_max_requests = 10**9
    asyncio.run(hypercorn_serve(create_app("openai", KEY), config))  # type: ignore[arg-type]


async def measure(
    base_url: str, http2: bool, concurrency: int, requests: int, stream: bool
) -> dict[str, Any]:
    upstream = Upstream()
    if http2:
        upstream.use_http2([base_url])
    provider = OpenAIProvider(ProviderContext(http=upstream))
    d = Deployment(
        id="bench",
        provider="openai",
        model="gpt-4o-mini",
        base_url=base_url,
        price=Price(0, 0),  # type: ignore[arg-type]
        context_window=128_000,
        capabilities=frozenset({"chat"}),
        api_key=KEY,
    )
    request = ChatRequest(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "say something short"}]
    )
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        if stream:
            async for _ in provider.stream(d, request, DEADLINES):
                pass
        else:
            await provider.complete(d, request, DEADLINES)
        latencies.append(time.perf_counter() - started)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    for _ in range(50):  # warm the pool
        await one()
    latencies.clear()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await upstream.aclose()
    return {
        "protocol": "HTTP/2 (httpx)" if http2 else "HTTP/1.1 (aiohttp)",
        "stream": stream,
        "concurrency": concurrency,
        "requests": len(latencies),
        "client_cpu_ms_per_call": round(1000 * cpu / len(latencies), 3),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
        "calls_per_s": round(len(latencies) / wall),
    }


async def main_async(args: argparse.Namespace, base_url: str) -> list[dict[str, Any]]:
    rows = []
    for stream in (False, True):
        for concurrency in (1, 16):
            for http2 in (False, True):
                rows.append(await measure(base_url, http2, concurrency, args.requests, stream))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--out", default="upstream_http2")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/_fake/health")
        rows = asyncio.run(main_async(args, f"http://127.0.0.1:{port}/v1"))
    finally:
        server.terminate()
        server.wait(10)
    head = [
        "protocol",
        "stream",
        "concurrency",
        "client CPU ms/call",
        "p50 ms",
        "p99 ms",
        "calls/s",
    ]
    print(" | ".join(head))
    for r in rows:
        print(
            f"{r['protocol']:<18} | {r['stream']!s:<6} | {r['concurrency']:>3} | "
            f"{r['client_cpu_ms_per_call']:>7.3f} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} | "
            f"{r['calls_per_s']:>6}"
        )
    out = ROOT / "bench" / "results" / f"{args.out}.json"

    out.write_text(
        json.dumps(
            {"benchmark": "upstream_http2", "machine": machine_info(), "rows": rows}, indent=2
        )
        + "\n"
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
