"""Two server processes sharing Redis agree on an open breaker within a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import ENVIRON, Stack, stack_settings
from tests.gateway.test_failover import chat, route
from tests.live import LiveServer
from tests.support import free_port


def test_an_open_breaker_reaches_the_other_server(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = stack_settings(
        stack.tmp, stack.fakes, stack.refused, redis_url=redis_url, redis_key_prefix=redis_prefix
    )
    stack.reset()
    with LiveServer(settings, ENVIRON) as a, LiveServer(settings, ENVIRON) as b:
        client_a, client_b = stack.client(a), stack.client(b)
        stack.fakes["primary"].set_faults(status=503)
        for _ in range(3):  # opens the breaker on server A
            assert route(chat(client_a).headers)["deployment"] == "backup"
        opened = time.monotonic()
        assert a.state.health.snapshot("primary")["breaker"] == "open"

        # Server B never called the primary, yet learns of the open breaker.
        while b.state.health.snapshot("primary")["breaker"] != "open":
            assert time.monotonic() - opened < 1.0, "server B did not learn within 1 s"
            time.sleep(0.01)
        before = len(stack.fakes["primary"].requests)
        r = chat(client_b)
        assert route(r.headers)["attempts"] == "1"
        assert len(stack.fakes["primary"].requests) == before


def test_a_new_server_starts_with_the_shared_state(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = stack_settings(
        stack.tmp, stack.fakes, stack.refused, redis_url=redis_url, redis_key_prefix=redis_prefix
    )
    stack.reset()
    with LiveServer(settings, ENVIRON) as a:
        stack.fakes["primary"].set_faults(status=429, retry_after=30, times=1)
        assert route(chat(stack.client(a)).headers)["deployment"] == "backup"
        # Published asynchronously: wait until Redis holds it (bounded).
        deadline = time.monotonic() + 1.0
        with LiveServer(settings, ENVIRON) as late:
            while late.state.health.snapshot("primary")["cooldown_for_s"] == 0.0:
                if time.monotonic() > deadline:
                    pytest.fail("a server started later did not load the cooldown")
                time.sleep(0.01)
            assert route(chat(stack.client(late)).headers)["deployment"] == "backup"


def test_two_server_processes_agree_within_a_second(
    stack: Stack, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """The same check with two real `polymodal serve` processes."""
    settings = stack_settings(stack.tmp, stack.fakes, stack.refused)
    config = tmp_path / "polymodal.yaml"
    config.write_text(
        json.dumps(
            {
                "deployments": [d.model_dump(mode="json") for d in settings.deployments],
                "shipped_catalog": False,
                "default_model": "primary",
                "default_embedding_model": "primary",
                "routes": settings.routes.model_dump(mode="json"),
                "access_log": False,
            }
        )
    )
    env = {
        **os.environ,
        **ENVIRON,
        "POLYMODAL_CONFIG": str(config),
        "POLYMODAL_DATABASE_URL": settings.database_url,
        "POLYMODAL_DATA_DIR": str(tmp_path),
        "POLYMODAL_STORAGE_URL": f"file://{tmp_path}/objects",
        "POLYMODAL_REDIS_URL": redis_url,
        "POLYMODAL_REDIS_KEY_PREFIX": redis_prefix,
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "polymodal", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    stack.reset()
    try:
        clients = [
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}/v1",
                headers={"Authorization": f"Bearer {stack.key}"},
                timeout=30,
            )
            for port in ports
        ]
        for client in clients:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/routing/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "server process did not start"
                time.sleep(0.1)

        def breaker(client: httpx.Client) -> str:
            data = client.get("/routing/health").json()["data"]
            return str(next(d["breaker"] for d in data if d["deployment"] == "primary"))

        stack.fakes["primary"].set_faults(status=503)
        for _ in range(3):
            assert route(chat(clients[0]).headers)["deployment"] == "backup"
        opened = time.monotonic()
        assert breaker(clients[0]) == "open"
        while breaker(clients[1]) != "open":
            assert time.monotonic() - opened < 1.0, "the second process did not learn in 1 s"
            time.sleep(0.01)
        before = len(stack.fakes["primary"].requests)
        assert route(chat(clients[1]).headers)["attempts"] == "1"
        assert len(stack.fakes["primary"].requests) == before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
