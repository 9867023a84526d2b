"""Kill a real `polymodal serve` with SIGKILL after it answered requests and before it
wrote their usage rows; the restarted server has every row exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import UsageEvent
from polymodal.db.scope import system_session
from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.conftest import DatabaseTarget
from tests.setup_helpers import seed_tenants
from tests.support import free_port

FAKE_KEY = "sk-fake-upstream-key-0123456789"
REQUESTS = 8


class ServeProcess:
    """`python -m polymodal serve` in its own process, on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as out:  # a file, not a pipe nobody drains
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polymodal", "serve", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90  # a shared 2-core machine: be patient
        while True:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")
                pytest.fail(f"polymodal serve exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "polymodal serve did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as provider:
        yield provider


def _config(path: Path, fake: FakeProvider) -> None:
    deployment: dict[str, Any] = {
        "id": "fake-openai",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.base_url,
        "api_key_env": "FAKE_KEY",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "context_window": 8000,
        "max_output_tokens": 500,
        "capabilities": ["chat"],
    }
    route = ["fake-openai"]
    path.write_text(
        json.dumps(
            {
                "deployments": [deployment],
                "shipped_catalog": False,
                "default_model": "fake-openai",
                "default_embedding_model": "fake-openai",
                "routes": {"simple": route, "complex": route, "critical": route},
                "access_log": False,
            }
        )
    )


async def _prepare(settings: Settings, name: str) -> tuple[str, str]:
    email = f"dev@{name}.test"
    made = await seed_tenants(settings, {name: [(email, "developer")]}, plan="pro", migrate=False)
    return made.keys[email], str(made.tenant_ids[name])


async def _ledger(settings: Settings, tenant_id: str) -> dict[str, int]:
    """How many ledger rows each request id has."""
    engine = create_engine(settings)
    try:
        async with system_session(session_factory(engine)) as s:
            result = await s.execute(
                select(UsageEvent.request_id, func.count())
                .where(UsageEvent.tenant_id == __import__("uuid").UUID(tenant_id))
                .group_by(UsageEvent.request_id)
            )
            return {rid: int(n) for rid, n in result.all()}
    finally:
        await engine.dispose()


def test_sigkill_after_answers_loses_no_usage_row(
    migrated_db: DatabaseTarget, fake: FakeProvider, tmp_path: Path
) -> None:
    settings = migrated_db.settings()
    name = f"crash-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    key, tenant_id = asyncio.run(_prepare(settings, name))
    config = tmp_path / "polymodal.yaml"
    _config(config, fake)
    spool = tmp_path / "spool"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POLYMODAL_") or k.startswith("POLYMODAL_TEST_")
    }
    env.update(
        {
            "FAKE_KEY": FAKE_KEY,
            "POLYMODAL_CONFIG": str(config),
            "POLYMODAL_ENVIRONMENT": "test",
            "POLYMODAL_SECRET_KEY": settings.secret_key.get_secret_value(),
            "POLYMODAL_DATABASE_URL": settings.database_url,
            "POLYMODAL_DATA_DIR": str(tmp_path),
            "POLYMODAL_STORAGE_URL": f"file://{tmp_path}/objects",
            "POLYMODAL_USAGE_SPOOL_DIR": str(spool),
            # Never flush on a timer: the kill lands after the answers, before any write.
            "POLYMODAL_USAGE_FLUSH_INTERVAL_S": "3600",
        }
    )
    if settings.database_schema:
        env["POLYMODAL_DATABASE_SCHEMA"] = settings.database_schema

    first = ServeProcess(env, tmp_path / "serve-1.log")
    try:
        first.wait_ready()
        client = openai.OpenAI(base_url=first.base_url + "/v1", api_key=key, max_retries=0)
        request_ids = []
        for i in range(REQUESTS):
            raw = client.chat.completions.with_raw_response.create(
                model="fake-openai", messages=[{"role": "user", "content": f"hello {i}"}]
            )
            assert raw.parse().choices[0].message.content
            request_ids.append(raw.headers["x-request-id"])
        assert asyncio.run(_ledger(settings, tenant_id)) == {}  # nothing written yet
        first.kill()
    finally:
        first.stop()

    # What the dead process left: its spool segment. Keep a copy and put it back under
    # a second name, so the restart replays the same rows twice.
    [segment] = [p for p in spool.glob("*.jsonl") if p.stat().st_size > 0]
    assert len(segment.read_bytes().splitlines()) == REQUESTS
    shutil.copy(segment, spool / "copy-of-dead-segment.jsonl")

    second = ServeProcess(env, tmp_path / "serve-2.log")
    try:
        second.wait_ready()  # replay happens during start-up, before serving
        assert asyncio.run(_ledger(settings, tenant_id)) == {rid: 1 for rid in request_ids}
        assert not [p for p in spool.glob("*.jsonl") if p.stat().st_size > 0]
        metrics = httpx.get(second.base_url + "/metrics").text
        assert (
            'polymodal_tokens_total{deployment="fake-openai",direction="in",'
            'feature_kind="api",plan="pro"}' in metrics
        )
    finally:
        second.stop()
