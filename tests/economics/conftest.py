"""Rate limits and budgets against a live polymodal in front of a fake OpenAI-wire
provider. Each test gets a fresh tenant (an owner key to manage, two member keys to
call), so buckets and budgets never leak between tests.

Prices are high on purpose (USD 1000 / 2000 per Mtok in / out) so a handful of small
calls moves a budget measurably.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.testing import FakeProvider
from tests.live import LiveServer
from tests.setup_helpers import add_member, every_tier, sqlite_settings

FAKE_KEY = "sk-fake-upstream-economics"
ENVIRON = {"FAKE_KEY": FAKE_KEY}
PRICE_IN, PRICE_OUT = Decimal(1000), Decimal(2000)  # USD per Mtok
PLANS = {
    "free": {"requests_per_minute": 30, "tokens_per_minute": 20_000},
    "pro": {"requests_per_minute": 300, "tokens_per_minute": 200_000},
    "enterprise": {"requests_per_minute": 3000, "tokens_per_minute": 2_000_000},
}


def deployments(fake: FakeProvider) -> list[dict[str, Any]]:
    return [
        {
            "id": "fake-chat",
            "provider": "openai",
            "model": "gpt-fake",
            "base_url": fake.base_url,
            "api_key_env": "FAKE_KEY",
            "price": {"input_per_mtok": str(PRICE_IN), "output_per_mtok": str(PRICE_OUT)},
            "context_window": 100_000,
            "max_output_tokens": 4000,
            "capabilities": ["chat", "json", "tools"],
        },
        {
            "id": "fake-embed",
            "provider": "openai",
            "model": "text-embedding-fake",
            "base_url": fake.base_url,
            "api_key_env": "FAKE_KEY",
            "price": {"input_per_mtok": str(PRICE_IN)},
            "context_window": 8000,
            "dimensions": 1536,
            "capabilities": ["embeddings"],
        },
    ]


def economics_overrides(fake: FakeProvider) -> dict[str, Any]:
    """Everything but the database: the fake deployments, routes and plans."""
    return {
        "deployments": deployments(fake),
        "shipped_catalog": False,
        "default_model": "fake-chat",
        "default_embedding_model": "fake-embed",
        "routes": every_tier("fake-chat"),
        "plan_limits": PLANS,
        "usage_flush_interval_s": 0.2,
        "upstream_always_stream": False,
    }


def economics_settings(tmp: Path, fake: FakeProvider, **overrides: Any) -> Settings:
    return sqlite_settings(tmp, "economics.db", **{**economics_overrides(fake), **overrides})


async def migrate(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


@dataclass
class Tenant:
    id: str
    name: str
    owner_key: str
    key: str  # a member's key: calls models, cannot change limits
    key_id: str
    other_key: str
    other_key_id: str


async def create_tenant(settings: Settings, plan: str = "free") -> Tenant:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    name = f"econ-{uuid.uuid4().hex[:8]}"
    try:
        tenant = await admin.create_tenant(sessions, name=name, plan=plan, actor="test")
        member = f"member@{name}.test"
        _, owner = await add_member(sessions, tenant=name, email=f"owner@{name}.test", role="owner")
        _, first = await add_member(sessions, tenant=name, email=member, role="member")
        second = await admin.issue_key(sessions, tenant=name, email=member, actor="test")
    finally:
        await engine.dispose()
    return Tenant(
        str(tenant.id),
        name,
        owner.secret,
        first.secret,
        str(first.id),
        second.secret,
        str(second.id),
    )


@dataclass
class Env:
    server: LiveServer
    fake: FakeProvider
    settings: Settings

    def client(self, key: str) -> httpx.Client:
        return self.server.client(key, path="/v1")

    def tenant(self, plan: str = "free") -> Tenant:
        return asyncio.run(create_tenant(self.settings, plan))

    def settle(self) -> None:
        """Wait for settlements in flight, then write the ledger (both bounded)."""
        self.server.call(self.server.state.economics.drain())
        self.server.call(self.server.state.usage.flush())


@pytest.fixture(scope="module", params=["whole", "stream"])
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    """Upstream calls whole, or streamed even for non-streaming requests (production's
    default): both paths must reserve, settle and release alike."""
    tmp = tmp_path_factory.mktemp("economics")
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
        settings = economics_settings(tmp, fake, upstream_always_stream=request.param == "stream")
        asyncio.run(migrate(settings))
        with LiveServer(settings, ENVIRON) as server:
            yield Env(server, fake, settings)


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "env" in request.fixturenames:
        request.getfixturevalue("env").fake.reset()


def chat_body(max_tokens: int = 20, text: str = "Say something short") -> dict[str, Any]:
    return {
        "model": "fake-chat",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }
