"""A knowledge-base stack on each database backend: the real gateway with the local
multilingual-e5-small model, Qdrant local mode in a temporary folder, the in-process
runner. Tests make fresh tenants, so one stack per backend serves the whole run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal import wiring
from polymodal.db.engine import create_engine, session_factory
from polymodal.domain.principal import Principal, Role
from polymodal.gateway.service import Gateway
from polymodal.rag import runtime
from polymodal.rag.jobs import InProcessRunner
from polymodal.rag.runtime import RagStack
from polymodal.rag.service import KnowledgeService
from polymodal.settings import Settings
from polymodal.tenancy import admin
from polymodal.tenancy.usage import UsageRecorder
from tests.conftest import DatabaseTarget


@dataclass
class Rag:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    gateway: Gateway
    usage: UsageRecorder
    stack: RagStack
    runner: InProcessRunner
    service: KnowledgeService

    async def tenant(self, role: Role = Role.DEVELOPER) -> Principal:
        created = await admin.create_tenant(
            self.sessions, name=f"rag-{uuid.uuid4().hex[:10]}", actor="test"
        )
        return Principal(tenant_id=created.id, user_id=uuid.uuid4(), roles=frozenset({role}))


def rag_settings(db: DatabaseTarget, tmp: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "qdrant_path": tmp / "qdrant",
        "fetch_allow_networks": ["127.0.0.1/32"],
        "usage_flush_interval_s": 60,
        "ingest_job_lease_s": 30,
    }
    base.update(overrides)
    return db.settings(**base)


async def build_rag(settings: Settings) -> Rag:
    engine = create_engine(settings)
    sessions = session_factory(engine)
    http = wiring.http_client(settings)
    providers = wiring.providers(settings, http)
    catalog = wiring.catalog(settings, {}, providers)
    gateway, usage = wiring.gateway(
        settings,
        catalog=catalog,
        providers=providers,
        sessions=sessions,
        registry=wiring.health(settings),
        metrics=None,
    )
    models = wiring.gateway_embeddings(gateway)
    stack = runtime.build(settings, sessions=sessions, models=models)
    runner = runtime.runner(settings, stack, sessions)
    service = runtime.service(settings, stack, sessions=sessions, models=models, queue=runner)
    rag = Rag(settings, sessions, gateway, usage, stack, runner, service)
    rag._engine = engine  # type: ignore[attr-defined]
    rag._http = http  # type: ignore[attr-defined]
    rag._providers = providers  # type: ignore[attr-defined]
    return rag


async def close_rag(rag: Rag) -> None:
    await rag.runner.stop()
    rag.stack.close()
    for p in rag._providers.values():  # type: ignore[attr-defined]
        await p.aclose()
    await rag._http.aclose()  # type: ignore[attr-defined]
    await rag._engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def rag(
    migrated_db: DatabaseTarget, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Rag]:
    tmp = tmp_path_factory.mktemp(f"rag-{migrated_db.backend}")
    built = await build_rag(rag_settings(migrated_db, tmp))
    try:
        yield built
    finally:
        await close_rag(built)
