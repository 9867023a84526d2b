"""A live polymodal server on PostgreSQL (RLS on, app role confined) with two tenants,
A and B, each with an owner key, and a fake OpenAI upstream for model calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings
from polymodal.templates.catalog import builtin_catalog
from polymodal.tenancy import admin
from polymodal.testing import FakeProvider
from tests.conftest import PG_URL, DatabaseTarget, need_service
from tests.live import LiveServer

FAKE_KEY = "sk-fake-upstream-key-isolation"
TEMPLATE_BASE = "mutual-nda"
ENVIRON = {"FAKE_KEY": FAKE_KEY}


@dataclass
class Tenant:
    id: uuid.UUID
    name: str
    owner_key: str
    owner_email: str


@dataclass
class IsoEnv:
    server: LiveServer
    settings: Settings
    a: Tenant
    b: Tenant

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.server.base_url, headers=headers, timeout=60)

    @asynccontextmanager
    async def sessions(self) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
        """Sessions of a fresh engine built like the server's (app role, RLS on)."""
        engine = create_engine(self.settings)
        try:
            yield session_factory(engine)
        finally:
            await engine.dispose()


def template_definition(template_id: str) -> dict[str, Any]:
    """A valid custom template (a built-in, renamed)."""
    data = builtin_catalog().entries[TEMPLATE_BASE].template.model_dump(mode="json", by_alias=True)
    data.pop("version")
    data["id"] = template_id
    return data


def _settings(target: DatabaseTarget, fake: FakeProvider) -> Settings:
    def deployment(id_: str, capability: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": id_,
            "provider": "openai",
            "base_url": fake.base_url,
            "api_key_env": "FAKE_KEY",
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "capabilities": [capability] + (["json"] if capability == "chat" else []),
            **extra,
        }

    only = ["fake-chat"]
    return target.settings(
        deployments=[
            deployment("fake-chat", "chat", model="gpt-4o-mini", context_window=64000),
            deployment(
                "fake-embed",
                "embeddings",
                model="text-embedding-3-small",
                context_window=8000,
                dimensions=1536,
            ),
        ],
        routes={"simple": only, "complex": only, "critical": only},
        default_embedding_model="fake-embed",
        upstream_first_byte_timeout_s=5.0,
        upstream_idle_timeout_s=5.0,
        upstream_total_timeout_s=10.0,
        first_byte_floor_s=5.0,
        stream_idle_floor_s=5.0,
        usage_flush_interval_s=60,
        upstream_always_stream=False,
    )


async def _prepare(settings: Settings) -> tuple[Tenant, Tenant]:
    engine = create_engine(settings)
    await migrations.upgrade(engine)
    sessions = session_factory(engine)
    made = []
    for label in ("a", "b"):
        name = f"iso-{label}-{uuid.uuid4().hex[:6]}"
        email = f"owner@{name}.test"
        tenant = await admin.create_tenant(sessions, name=name, actor="test")
        await admin.add_user(sessions, tenant=name, email=email, role="owner", actor="test")
        issued = await admin.issue_key(sessions, tenant=name, email=email, actor="test")
        made.append(Tenant(tenant.id, name, issued.secret, email))
    await engine.dispose()
    return made[0], made[1]


@contextmanager
def live_env(tmp: Path) -> Iterator[IsoEnv]:
    """The server and its two tenants, torn down (schema dropped) on exit."""
    need_service("PostgreSQL", PG_URL, 5432)
    target = DatabaseTarget("postgres", tmp)
    asyncio.run(target.create())
    fake = FakeProvider(wire="openai", api_key=FAKE_KEY).start()
    try:
        settings = _settings(target, fake)
        a, b = asyncio.run(_prepare(settings))
        with LiveServer(settings, ENVIRON) as server:
            yield IsoEnv(server=server, settings=settings, a=a, b=b)
    finally:
        fake.stop()
        asyncio.run(target.drop())


@pytest.fixture(scope="session")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsoEnv]:
    with live_env(tmp_path_factory.mktemp("isolation")) as env:
        yield env
