"""Time failover adds: for each fault on the primary deployment, how much longer a request
takes to get a successful answer (from the backup) than a healthy call.

    .venv/bin/python bench/failover.py [--runs 60] [--out bench/results/failover.json]

Primary and backup are fake OpenAI upstreams in their own processes; `polymodal serve`
(1 worker) routes primary -> backup with the default deadlines. So that every run pays
for the fault (instead of the breaker skipping the dead primary after three failures, which
costs nothing), the breaker thresholds are raised and the retry budget lets every request
retry; everything else is the default configuration. Each fault is measured after healthy
calls, so the adaptive deadlines have learnt the primary's normal speed.

Targets (issue 4): errors, refused connections and malformed bodies add at most 100 ms at
p99; hangs, slow first bytes and stalls add at most 500 ms at p99.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info
from stack import Proc, free_port, percentile, start_fake, start_gateway, stop

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"
# fault name -> (fault on the primary, gateway, streaming request?, class of fault).
# Gateway "stream" is the default configuration (upstream calls stream even when the
# client does not); "whole" asks upstreams for whole answers (upstream_always_stream:
# false), where a body that is not JSON can happen.
FAULTS: dict[str, tuple[dict[str, Any], str, bool, str]] = {
    "http_429": ({"status": 429, "retry_after": 0}, "stream", False, "error"),
    "http_500": ({"status": 500}, "stream", False, "error"),
    "http_503": ({"status": 503}, "stream", False, "error"),
    "connection_refused": ({}, "stream", False, "error"),
    "malformed_first_chunk": (
        {"malformed": "chunk", "malformed_after_chunks": 0},
        "stream",
        False,
        "error",
    ),
    "hang": ({"hang": True}, "stream", False, "hang"),
    "slow_first_byte": ({"first_byte_delay_ms": 5000}, "stream", True, "hang"),
    "stall_mid_stream": ({"stall_after_chunks": 3}, "stream", True, "hang"),
    "truncated_stream": ({"truncate_after_chunks": 3}, "stream", True, "error"),
    "bad_chunk_mid_stream": (
        {"malformed": "chunk", "malformed_after_chunks": 3},
        "stream",
        True,
        "error",
    ),
    "whole_http_500": ({"status": 500}, "whole", False, "error"),
    "whole_malformed_json": ({"malformed": "json"}, "whole", False, "error"),
    "whole_hang": ({"hang": True}, "whole", False, "hang"),
}
# Faults after the first chunk: the answer continues on the backup within the same
# response, whose x-polymodal-deployment header names the primary it started on.
MID_STREAM = {"stall_mid_stream", "truncated_stream", "bad_chunk_mid_stream"}
TARGET_MS = {"error": 100.0, "hang": 500.0}


def start(tmp: Path) -> tuple[list[Proc], dict[str, int], dict[str, int], str]:
    ports: dict[str, int] = {}
    procs: list[Proc] = []
    for name in ("primary", "backup"):
        proc, ports[name] = start_fake("openai", KEY)
        procs.append(proc)
    ports["refused"] = free_port()  # nothing listens there

    def deployment(id_: str, port: int) -> dict[str, Any]:
        return {
            "id": id_,
            "provider": "openai",
            "model": f"gpt-{id_}",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key_env": "BENCH_KEY",
            "price": {"input_per_mtok": 1},
            "context_window": 100000,
            "capabilities": ["chat"],
        }

    route = ["primary", "backup"]
    config = {
        "shipped_catalog": False,
        "default_model": "primary",
        "default_embedding_model": "primary",
        "deployments": [deployment(name, port) for name, port in ports.items()],
        "routes": {"simple": route, "complex": route, "critical": route},
        "breaker_consecutive_failures": 1_000_000,
        "breaker_min_calls": 1_000_000,
        "retry_budget_ratio": 1.0,
        "access_log": False,
    }
    gateways: dict[str, int] = {}
    key = ""
    for mode, always_stream in (("stream", True), ("whole", False)):
        folder = tmp / mode
        folder.mkdir()
        gateway, gateways[mode], key = start_gateway(
            folder, {**config, "upstream_always_stream": always_stream}, {"BENCH_KEY": KEY}
        )
        procs.append(gateway)
    return procs, ports, gateways, key


def timed(client: httpx.Client, body: dict[str, Any], stream: bool) -> tuple[float, str]:
    started = time.perf_counter()
    if not stream:
        r = client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        text = r.json()["choices"][0]["message"]["content"]
        deployment = r.headers["x-polymodal-deployment"]
        return time.perf_counter() - started, deployment if text else "empty"
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        r.raise_for_status()
        done = any(line == "data: [DONE]" for line in r.iter_lines())
        deployment = r.headers["x-polymodal-deployment"]
    return time.perf_counter() - started, deployment if done else "broken"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "bench/results/failover.json"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        procs, ports, gateways, _ = start(Path(tmp))
        control = {n: f"http://127.0.0.1:{ports[n]}/_fake" for n in ("primary", "backup")}
        try:
            keys = {
                m: (Path(tmp) / m / "data" / "demo-key.txt").read_text().strip() for m in gateways
            }
            clients = {
                mode: httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {keys[mode]}"},
                    timeout=60,
                )
                for mode, port in gateways.items()
            }
            body = {
                "model": "tier:simple",
                "messages": [{"role": "user", "content": "one two three four five six"}],
            }
            print(
                f"{'fault':<20} {'kind':<6} {'runs':>4} {'healthy p50':>11} "
                f"{'added p50':>9} {'added p99':>9} {'target':>7}  ok"
            )
            for name, (faults, mode, stream, kind) in FAULTS.items():
                client = clients[mode]
                httpx.post(control["primary"] + "/reset")
                healthy = [timed(client, body, stream)[0] for _ in range(30)]
                base = percentile(healthy, 50)
                request = body
                if name == "connection_refused":
                    request = {**body, "model": "refused", "fallbacks": ["backup"]}
                else:
                    httpx.post(control["primary"] + "/faults", json=faults)
                added, served = [], set()
                for _ in range(args.runs):
                    elapsed, deployment = timed(client, request, stream)
                    added.append(elapsed - base)
                    served.add(deployment)
                p50, p99 = percentile(added, 50) * 1000, percentile(added, 99) * 1000
                expected = {"primary"} if name in MID_STREAM else {"backup"}
                ok = p99 <= TARGET_MS[kind] and served == expected
                rows.append(
                    {
                        "fault": name,
                        "kind": kind,
                        "gateway": mode,
                        "stream": stream,
                        "runs": args.runs,
                        "healthy_p50_ms": base * 1000,
                        "added_p50_ms": p50,
                        "added_p99_ms": p99,
                        "target_p99_ms": TARGET_MS[kind],
                        "served_by": sorted(served),
                        "met": ok,
                    }
                )
                print(
                    f"{name:<20} {kind:<6} {args.runs:>4} {base * 1000:>9.1f}ms "
                    f"{p50:>7.1f}ms {p99:>7.1f}ms {TARGET_MS[kind]:>5.0f}ms  {ok}",
                    flush=True,
                )
        finally:
            stop(procs)
    result = {
        "benchmark": "failover",
        "machine": machine_info(),
        "rows": rows,
        "all_met": all(r["met"] for r in rows),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"all targets met: {result['all_met']}; wrote {args.out}")


if __name__ == "__main__":
    main()
