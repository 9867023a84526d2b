"""What polymodal adds on the hot path: the same requests sent straight to a fake OpenAI
upstream and through `polymodal serve` (1 worker), at concurrency 1, 16 and 64.

    .venv/bin/python bench/gateway_overhead.py [--quick] [--out bench/results/gateway_overhead.json]

Upstream, gateway and load generator each run in their own process on this machine (they
share its cores, as the targets assume). Prints a table and writes JSON with the machine
and package versions. Targets (issue 3): added p50 <= 2 ms and p99 <= 10 ms at
concurrency 1; >= 1,000 non-streaming requests/s at concurrency 64; streaming time to first
byte adds <= 3 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Sample, build_request, run
from machine import machine_info
from stack import Proc, percentile, start_fake, start_gateway, stop

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEY = "sk-bench-upstream"
CHAT = {"model": "bench-openai", "messages": [{"role": "user", "content": "Say something short"}]}
EMBED = {"model": "bench-openai-embed", "input": "a sentence to embed", "dimensions": 64}


def summarize(sample: Sample, *, ttfb: bool = False) -> dict[str, float]:
    values = sample.ttfb_s if ttfb else sample.latency_s
    return {
        "requests": sample.count,
        "errors": sample.errors,
        "p50_ms": percentile(values, 50) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "mean_ms": statistics.fmean(values) * 1000 if values else float("nan"),
        "rps": sample.count / sample.elapsed_s if sample.elapsed_s else 0.0,
    }


def start_processes(tmp: Path) -> tuple[list[Proc], int, int, str]:
    upstream, up_port = start_fake("openai", UPSTREAM_KEY)
    deployment = {
        "provider": "openai",
        "base_url": f"http://127.0.0.1:{up_port}/v1",
        "api_key_env": "BENCH_UPSTREAM_KEY",
        "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
    }
    config = {
        "deployments": [
            {
                **deployment,
                "id": "bench-openai",
                "model": "gpt-4o-mini",
                "context_window": 128000,
                "capabilities": ["chat", "tools", "json"],
            },
            {
                **deployment,
                "id": "bench-openai-embed",
                "model": "text-embedding-3-small",
                "context_window": 8191,
                "capabilities": ["embeddings"],
            },
        ]
    }
    gateway, gw_port, key = start_gateway(tmp, config, {"BENCH_UPSTREAM_KEY": UPSTREAM_KEY})
    return [upstream, gateway], up_port, gw_port, key


async def measure(up_port: int, gw_port: int, key: str, quick: bool) -> list[dict[str, Any]]:
    host = "127.0.0.1"
    up_auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    gw_auth = {"Authorization": f"Bearer {key}"}
    rows: list[dict[str, Any]] = []
    cases = [
        ("chat", "/v1/chat/completions", {**CHAT, "model": "gpt-4o-mini"}, CHAT, False),
        (
            "chat-stream",
            "/v1/chat/completions",
            {**CHAT, "model": "gpt-4o-mini", "stream": True},
            {**CHAT, "stream": True},
            True,
        ),
        (
            "embeddings",
            "/v1/embeddings",
            {**EMBED, "model": "text-embedding-3-small"},
            EMBED,
            False,
        ),
    ]
    for concurrency in (1, 16, 64):
        n = (300 if quick else 2000) if concurrency == 1 else None
        duration = None if concurrency == 1 else (3.0 if quick else 10.0)
        for name, path, direct_body, gw_body, is_stream in cases:
            direct_req = build_request(
                host, up_port, path, json.dumps(direct_body).encode(), up_auth
            )
            gw_req = build_request(host, gw_port, path, json.dumps(gw_body).encode(), gw_auth)
            direct = await run(
                host,
                up_port,
                direct_req,
                concurrency=concurrency,
                requests=n,
                duration_s=duration,
                warmup=100,
            )
            via = await run(
                host,
                gw_port,
                gw_req,
                concurrency=concurrency,
                requests=n,
                duration_s=duration,
                warmup=100,
            )
            d, g = summarize(direct), summarize(via)
            row: dict[str, Any] = {
                "case": name,
                "concurrency": concurrency,
                "direct": d,
                "gateway": g,
                "added_p50_ms": g["p50_ms"] - d["p50_ms"],
                "added_p95_ms": g["p95_ms"] - d["p95_ms"],
                "added_p99_ms": g["p99_ms"] - d["p99_ms"],
            }
            if is_stream:
                dt, gt = summarize(direct, ttfb=True), summarize(via, ttfb=True)
                row["direct_ttfb"], row["gateway_ttfb"] = dt, gt
                row["added_ttfb_p50_ms"] = gt["p50_ms"] - dt["p50_ms"]
            rows.append(row)
            print_row(row)
    return rows


def print_row(row: dict[str, Any]) -> None:
    d, g = row["direct"], row["gateway"]
    ttfb = f"{row['added_ttfb_p50_ms']:+7.2f}" if "added_ttfb_p50_ms" in row else "      -"
    print(
        f"{row['case']:<12} c={row['concurrency']:<3} "
        f"direct p50 {d['p50_ms']:6.2f} p99 {d['p99_ms']:6.2f} {d['rps']:7.0f} r/s | "
        f"gateway p50 {g['p50_ms']:6.2f} p99 {g['p99_ms']:6.2f} {g['rps']:7.0f} r/s "
        f"err {g['errors']} | "
        f"added p50 {row['added_p50_ms']:+6.2f} p99 {row['added_p99_ms']:+6.2f} ttfb p50 {ttfb}",
        flush=True,
    )


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def find(case: str, c: int) -> dict[str, Any]:
        return next(r for r in rows if r["case"] == case and r["concurrency"] == c)

    chat1, chat64, stream1 = find("chat", 1), find("chat", 64), find("chat-stream", 1)
    checks = {
        "added_p50_c1_le_2ms": chat1["added_p50_ms"] <= 2.0,
        "added_p99_c1_le_10ms": chat1["added_p99_ms"] <= 10.0,
        "rps_c64_ge_1000": chat64["gateway"]["rps"] >= 1000,
        "stream_ttfb_added_p50_le_3ms": stream1["added_ttfb_p50_ms"] <= 3.0,
    }
    return {"targets_met": checks, "all_met": all(checks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter runs")
    parser.add_argument("--out", default=str(ROOT / "bench/results/gateway_overhead.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs, up_port, gw_port, key = start_processes(Path(tmp))
        try:
            rows = asyncio.run(measure(up_port, gw_port, key, args.quick))
        finally:
            stop(procs)
    result = {
        "benchmark": "gateway_overhead",
        "quick": args.quick,
        "machine": machine_info(),
        "rows": rows,
        **verdict(rows),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["targets_met"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
