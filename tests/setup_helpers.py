"""Set-up shared by the live-server suites: a fake OpenAI-wire deployment, settings that
route every tier to it, and tenants whose members hold API keys."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.testing import FakeProvider
from tests.conftest import make_settings

FAKE_KEY_ENV = "FAKE_KEY"  # the environment variable the fake deployments read

People = Sequence[tuple[str, str]]  # (email, role)


def fake_chat_deployment(
    fake: FakeProvider,
    deployment_id: str,
    *,
    context_window: int = 64000,
    max_output_tokens: int = 4000,
    capabilities: Sequence[str] = ("chat", "json"),
) -> dict[str, Any]:
    """A gpt-4o-mini chat deployment (USD 1 / 2 per Mtok) served by `fake`."""
    return {
        "id": deployment_id,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": fake.base_url,
        "api_key_env": FAKE_KEY_ENV,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "context_window": context_window,
        "max_output_tokens": max_output_tokens,
        "capabilities": list(capabilities),
    }


def fake_embed_deployment(fake: FakeProvider, deployment_id: str) -> dict[str, Any]:
    """A text-embedding-3-small deployment (1536 dimensions) served by `fake`."""
    return {
        "id": deployment_id,
        "provider": "openai",
        "model": "text-embedding-3-small",
        "base_url": fake.base_url,
        "api_key_env": FAKE_KEY_ENV,
        "price": {"input_per_mtok": 0.5},
        "context_window": 8000,
        "dimensions": 1536,
        "capabilities": ["embeddings"],
    }


def every_tier(deployment_id: str) -> dict[str, list[str]]:
    """Routes that send every tier to one deployment."""
    only = [deployment_id]
    return {"simple": only, "complex": only, "critical": only}


def routed_to_fake(*deployments: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Settings overrides for a server in front of an instant fake upstream: these
    deployments, every tier routed to the first, whole (non-streamed) upstream calls and
    a usage ledger the tests flush explicitly.

    The fake answers in a millisecond, so the adaptive deadlines would shrink to their
    floors and a busy CI machine would trip them: these tests are not about failover
    (tests/gateway is), so the floors stay at 5 s."""
    values: dict[str, Any] = {
        "deployments": list(deployments),
        "routes": every_tier(deployments[0]["id"]),
        "first_byte_floor_s": 5.0,
        "stream_idle_floor_s": 5.0,
        "usage_flush_interval_s": 60,  # tests flush explicitly
        "upstream_always_stream": False,
    }
    values.update(overrides)
    return values


def sqlite_settings(tmp: Path, db_file: str, **overrides: Any) -> Settings:
    """Test settings on a SQLite file `db_file` in `tmp` (also the data directory)."""
    return make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp / db_file}", data_dir=tmp, **overrides
    )


async def add_member(
    sessions: async_sessionmaker[AsyncSession], *, tenant: str, email: str, role: str
) -> tuple[uuid.UUID, admin.IssuedKey]:
    """A new user of `tenant` with `role`, and an API key for them."""
    user_id = await admin.add_user(sessions, tenant=tenant, email=email, role=role, actor="test")
    issued = await admin.issue_key(sessions, tenant=tenant, email=email, actor="test")
    return user_id, issued


@dataclass
class Seeded:
    tenant_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # by tenant name
    keys: dict[str, str] = field(default_factory=dict)  # email -> API key secret


async def seed_tenants(
    settings: Settings, tenants: Mapping[str, People], *, plan: str = "free", migrate: bool = True
) -> Seeded:
    """Migrate the database of `settings` (unless told not to), then create each tenant
    (on `plan`) with its people, each holding one API key."""
    engine = create_engine(settings)
    seeded = Seeded()
    try:
        if migrate:
            await migrations.upgrade(engine)
        sessions = session_factory(engine)
        for name, people in tenants.items():
            created = await admin.create_tenant(sessions, name=name, plan=plan, actor="test")
            seeded.tenant_ids[name] = created.id
            for email, role in people:
                _, issued = await add_member(sessions, tenant=name, email=email, role=role)
                seeded.keys[email] = issued.secret
    finally:
        await engine.dispose()
    return seeded
