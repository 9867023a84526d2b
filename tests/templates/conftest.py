"""A live polymodal server whose every tier routes to one fake OpenAI upstream, and three
callers: a developer of tenant A, a viewer of tenant A, a developer of tenant B."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import UsageEvent
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.testing import FakeProvider
from tests.conftest import make_settings
from tests.live import LiveServer

FAKE_KEY = "sk-fake-upstream-key-templates"
ENVIRON = {"FAKE_KEY": FAKE_KEY}


@dataclass
class TemplatesEnv:
    server: LiveServer
    fake: FakeProvider
    dev_a: str
    viewer_a: str
    dev_b: str
    tenant_a: str

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.base_url + "/v1",
            headers={"Authorization": f"Bearer {key or self.dev_a}", **headers},
            timeout=30,
        )

    def usage_rows(self, request_id: str) -> list[UsageEvent]:
        self.server.call(self.server.state.usage.flush())

        async def rows() -> list[UsageEvent]:
            engine = create_engine(self.server.state.settings)
            try:
                async with session_factory(engine)() as s:
                    q = select(UsageEvent).where(UsageEvent.request_id == request_id)
                    return list((await s.execute(q.order_by(UsageEvent.id))).scalars())
            finally:
                await engine.dispose()

        return asyncio.run(rows())

    def metric(self, name: str, **labels: str) -> float:
        value = self.server.state.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def _settings(tmp: Path, fake: FakeProvider) -> Settings:
    deployment = {
        "id": "fake-writer",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.base_url,
        "api_key_env": "FAKE_KEY",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "context_window": 64000,
        "max_output_tokens": 4000,
        "capabilities": ["chat", "json"],
    }
    only = ["fake-writer"]
    return make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'templates.db'}",
        data_dir=tmp,
        deployments=[deployment],
        routes={"simple": only, "complex": only, "critical": only},
        upstream_first_byte_timeout_s=5.0,
        upstream_idle_timeout_s=5.0,
        upstream_total_timeout_s=10.0,
        # The fake answers in a millisecond, so the adaptive deadlines would shrink to
        # their floors and a busy CI machine would trip them: these tests are not about
        # failover (tests/gateway is).
        first_byte_floor_s=5.0,
        stream_idle_floor_s=5.0,
        usage_flush_interval_s=60,  # tests flush explicitly
        upstream_always_stream=False,
    )


async def _prepare(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings)
    await migrations.upgrade(engine)
    sessions = session_factory(engine)
    keys: dict[str, Any] = {}
    for tenant, people in (
        ("tmpl-a", [("dev@a.test", "developer"), ("viewer@a.test", "viewer")]),
        ("tmpl-b", [("dev@b.test", "developer")]),
    ):
        created = await admin.create_tenant(sessions, name=tenant, actor="test")
        keys[tenant] = str(created.id)
        for email, role in people:
            await admin.add_user(sessions, tenant=tenant, email=email, role=role, actor="test")
            issued = await admin.issue_key(sessions, tenant=tenant, email=email, actor="test")
            keys[email] = issued.secret
    await engine.dispose()
    return keys


@pytest.fixture(scope="session")
def tenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplatesEnv]:
    tmp = tmp_path_factory.mktemp("templates")
    fake = FakeProvider(wire="openai", api_key=FAKE_KEY).start()
    settings = _settings(tmp, fake)
    keys = asyncio.run(_prepare(settings))
    try:
        with LiveServer(settings, ENVIRON) as server:
            yield TemplatesEnv(
                server=server,
                fake=fake,
                dev_a=keys["dev@a.test"],
                viewer_a=keys["viewer@a.test"],
                dev_b=keys["dev@b.test"],
                tenant_a=keys["tmpl-a"],
            )
    finally:
        fake.stop()


@pytest.fixture(autouse=True)
def _clean_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "tenv" in request.fixturenames:
        tenv: TemplatesEnv = request.getfixturevalue("tenv")
        tenv.fake.reset()
        tenv.server.state.health.reset()


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
