"""Processes a benchmark runs: fake upstreams and `polymodal serve`, each its own process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

Proc = subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def start_fake(wire: str, api_key: str) -> tuple[Proc, int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polymodal.testing.fake_provider",
            "--wire",
            wire,
            "--port",
            str(port),
            "--api-key",
            api_key,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/_fake/health")
    return proc, port


def start_gateway(tmp: Path, config: dict[str, Any], env: dict[str, str]) -> tuple[Proc, int, str]:
    """Migrate, bootstrap the demo tenant and serve with one worker; returns its key."""
    path = tmp / "polymodal.yaml"
    path.write_text(json.dumps(config))
    full_env = {
        **os.environ,
        "POLYMODAL_CONFIG": str(path),
        "POLYMODAL_DATA_DIR": str(tmp / "data"),
        "POLYMODAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "POLYMODAL_STORAGE_URL": f"file://{tmp}/objects",
        **env,
    }
    cli = [sys.executable, "-m", "polymodal"]
    subprocess.run([*cli, "migrate"], env=full_env, check=True, capture_output=True)
    out = subprocess.run(
        [*cli, "admin", "bootstrap"], env=full_env, check=True, capture_output=True
    )
    key = out.stdout.decode().strip().splitlines()[-1]
    # The demo tenant is on the free plan (60 requests a minute): lift its limits so the
    # benchmarks measure the gateway, limiter included, not the plan.
    subprocess.run(
        [*cli, "admin", "tenant", "limits", "demo", "--rpm", "1000000000", "--tpm", "2000000000"],
        env=full_env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--workers", "1"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port, key


def stop(procs: list[Proc]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=20)
