"""Ledger fixtures: fresh tenants and known usage rows written straight to the ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import ledger, system
from polymodal.db.scope import system_session
from polymodal.domain.principal import Principal, Role
from polymodal.domain.usage import UsageRecord
from polymodal.tenancy.usage import ledger_row


@dataclass
class Tenant:
    id: uuid.UUID
    name: str

    def principal(self, role: Role = Role.DEVELOPER, user: uuid.UUID | None = None) -> Principal:
        return Principal(tenant_id=self.id, user_id=user or uuid.uuid4(), roles=frozenset({role}))


async def new_tenant(sessions: async_sessionmaker[AsyncSession], plan: str = "pro") -> Tenant:
    name = f"ledger-{uuid.uuid4().hex[:8]}"
    async with system_session(sessions) as s, s.begin():
        t = await system.create_tenant(s, name=name, plan=plan)
    return Tenant(t.id, name)


def usage(
    tenant: uuid.UUID,
    *,
    cost: str,
    at: datetime,
    user: uuid.UUID | None = None,
    feature: str = "api",
    deployment: str = "fake-openai",
    tokens_in: int = 10,
    tokens_out: int = 5,
    **extra: Any,
) -> UsageRecord:
    return UsageRecord(
        tenant_id=tenant,
        user_id=user,
        key_id=None,
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        feature=feature,
        kind="chat",
        deployment=deployment,
        provider="openai",
        model="gpt-4o-mini",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=Decimal(cost),
        latency_ms=12.5,
        ttfb_ms=3.0,
        stream=False,
        status="ok",
        created_at=at,
        **extra,
    )


async def insert(sessions: async_sessionmaker[AsyncSession], rows: list[UsageRecord]) -> None:
    async with system_session(sessions) as s, s.begin():
        await ledger.insert_usage(s, rows=[ledger_row(r) for r in rows])


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]
