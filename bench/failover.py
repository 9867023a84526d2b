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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import _free_port, _wait_http, percentile
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"
# fault name -> (fault settings on the primary, streaming request?, class of fault)
FAULTS: dict[str, tuple[dict[str, Any], bool, str]] = {
    "http_429": ({"status": 429, "retry_after": 0}, False, "error"),
    "http_500": ({"status": 500}, False, "error"),
    "http_503": ({"status": 503}, False, "error"),
    "connection_refused": ({}, False, "error"),
    "malformed_json": ({"malformed": "json"}, False, "error"),
    "hang": ({"hang": True}, False, "hang"),
    "slow_first_byte": ({"first_byte_delay_ms": 5000}, True, "hang"),
    "stall_mid_stream": ({"stall_after_chunks": 3}, True, "hang"),
    "truncated_stream": ({"truncate_after_chunks": 3}, True, "error"),
    "bad_chunk": ({"malformed": "chunk", "malformed_after_chunks": 3}, True, "error"),
}
TARGET_MS = {"error": 100.0, "hang": 500.0}


def start(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, int], int, str]:
    py = sys.executable
    ports = {"primary": _free_port(), "backup": _free_port(), "refused": _free_port()}
    procs = [
        subprocess.Popen(
            [
                py,
                "-m",
                "polymodal.testing.fake_provider",
                "--wire",
                "openai",
                "--port",
                str(ports[name]),
                "--api-key",
                KEY,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("primary", "backup")
    ]

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

    config = tmp / "polymodal.yaml"
    route = ["primary", "backup"]
    config.write_text(
        json.dumps(
            {
                "shipped_catalog": False,
                "default_model": "primary",
                "default_embedding_model": "primary",
                "deployments": [
                    deployment("primary", ports["primary"]),
                    deployment("backup", ports["backup"]),
                    deployment("refused", ports["refused"]),
                ],
                "routes": {"simple": route, "complex": route, "critical": route},
                "breaker_consecutive_failures": 1_000_000,
                "breaker_min_calls": 1_000_000,
                "retry_budget_ratio": 1.0,
                "access_log": False,
            }
        )
    )
    env = {
        **os.environ,
        "POLYMODAL_CONFIG": str(config),
        "POLYMODAL_DATA_DIR": str(tmp / "data"),
        "POLYMODAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "POLYMODAL_STORAGE_URL": f"file://{tmp}/objects",
        "BENCH_KEY": KEY,
    }
    cli = [py, "-m", "polymodal"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run([*cli, "admin", "bootstrap"], env=env, check=True, capture_output=True)
    key = out.stdout.decode().strip().splitlines()[-1]
    gw_port = _free_port()
    procs.append(
        subprocess.Popen(
            [*cli, "serve", "--port", str(gw_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    for name in ("primary", "backup"):
        _wait_http(f"http://127.0.0.1:{ports[name]}/_fake/health")
    _wait_http(f"http://127.0.0.1:{gw_port}/healthz")
    return procs, ports, gw_port, key


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
        procs, ports, gw, key = start(Path(tmp))
        control = {n: f"http://127.0.0.1:{ports[n]}/_fake" for n in ("primary", "backup")}
        try:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{gw}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
            body = {
                "model": "tier:simple",
                "messages": [{"role": "user", "content": "one two three four five six"}],
            }
            print(
                f"{'fault':<20} {'kind':<6} {'runs':>4} {'healthy p50':>11} "
                f"{'added p50':>9} {'added p99':>9} {'target':>7}  ok"
            )
            for name, (faults, stream, kind) in FAULTS.items():
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
                ok = p99 <= TARGET_MS[kind] and served == {"backup"}
                rows.append(
                    {
                        "fault": name,
                        "kind": kind,
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
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=20)
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
