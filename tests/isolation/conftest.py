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

from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings
from polymodal.templates.catalog import builtin_catalog
from polymodal.testing import FakeProvider
from tests.conftest import PG_URL, DatabaseTarget, need_service
from tests.live import LiveServer
from tests.setup_helpers import routed_to_fake, seed_tenants

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
        return self.server.client(key, timeout=60)

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

    return target.settings(
        **routed_to_fake(
            deployment("fake-chat", "chat", model="gpt-4o-mini", context_window=64000),
            deployment(
                "fake-embed",
                "embeddings",
                model="text-embedding-3-small",
                context_window=8000,
                dimensions=1536,
            ),
            default_embedding_model="fake-embed",
            upstream_first_byte_timeout_s=5.0,
            upstream_idle_timeout_s=5.0,
            upstream_total_timeout_s=10.0,
        )
    )


async def _prepare(settings: Settings) -> tuple[Tenant, Tenant]:
    names = [f"iso-{label}-{uuid.uuid4().hex[:6]}" for label in ("a", "b")]
    owners = {name: f"owner@{name}.test" for name in names}
    made = await seed_tenants(settings, {name: [(owners[name], "owner")] for name in names})
    a, b = (Tenant(made.tenant_ids[n], n, made.keys[owners[n]], owners[n]) for n in names)
    return a, b


@contextmanager
def live_env(tmp: Path) -> Iterator[IsoEnv]:
    """The server and its two tenants, torn down (schema dropped) on exit."""
    need_service("PostgreSQL", PG_URL, 5432)
    target = DatabaseTarget("postgres", tmp)
    asyncio.run(target.create())
    try:
        with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
            settings = _settings(target, fake)
            a, b = asyncio.run(_prepare(settings))
            with LiveServer(settings, ENVIRON) as server:
                yield IsoEnv(server=server, settings=settings, a=a, b=b)
    finally:
        asyncio.run(target.drop())


@pytest.fixture(scope="session")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsoEnv]:
    with live_env(tmp_path_factory.mktemp("isolation")) as env:
        yield env
