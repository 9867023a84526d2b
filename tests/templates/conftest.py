"""A live polymodal server whose every tier routes to one fake OpenAI upstream, and three
callers: a developer of tenant A, a viewer of tenant A, a developer of tenant B."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import UsageEvent
from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.live import LiveServer
from tests.setup_helpers import fake_chat_deployment, routed_to_fake, seed_tenants, sqlite_settings

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
        return self.server.client(key or self.dev_a, path="/v1", headers=headers)

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
    return sqlite_settings(
        tmp,
        "templates.db",
        **routed_to_fake(
            fake_chat_deployment(fake, "fake-writer"),
            upstream_first_byte_timeout_s=5.0,
            upstream_idle_timeout_s=5.0,
            upstream_total_timeout_s=10.0,
        ),
    )


PEOPLE = {
    "tmpl-a": [("dev@a.test", "developer"), ("viewer@a.test", "viewer")],
    "tmpl-b": [("dev@b.test", "developer")],
}


@pytest.fixture(scope="session")
def tenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplatesEnv]:
    tmp = tmp_path_factory.mktemp("templates")
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
        settings = _settings(tmp, fake)
        made = asyncio.run(seed_tenants(settings, PEOPLE))
        with LiveServer(settings, ENVIRON) as server:
            yield TemplatesEnv(
                server=server,
                fake=fake,
                dev_a=made.keys["dev@a.test"],
                viewer_a=made.keys["viewer@a.test"],
                dev_b=made.keys["dev@b.test"],
                tenant_a=str(made.tenant_ids["tmpl-a"]),
            )


@pytest.fixture(autouse=True)
def _clean_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "tenv" in request.fixturenames:
        tenv: TemplatesEnv = request.getfixturevalue("tenv")
        tenv.fake.reset()
        tenv.server.state.health.reset()


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
