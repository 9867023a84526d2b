"""Tenant-scoped reads of the audit chain (pages for the API, ordered runs for the
verifier). Appends live in db/repositories.append_audit."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import AuditEvent, AuditHead


async def page(
    session: AsyncSession, *, tenant_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[AuditEvent]:
    """Newest first, ``limit`` events with ``seq`` below ``before_seq`` (keyset paging)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if before_seq is not None:
        stmt = stmt.where(AuditEvent.seq < before_seq)
    result = await session.execute(stmt.order_by(AuditEvent.seq.desc()).limit(limit))
    return list(result.scalars())


async def run(
    session: AsyncSession, *, tenant_id: uuid.UUID, after_seq: int, limit: int
) -> list[AuditEvent]:
    """Oldest first, up to ``limit`` events with ``seq`` above ``after_seq``."""
    result = await session.execute(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq > after_seq)
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return list(result.scalars())


async def head(session: AsyncSession, *, tenant_id: uuid.UUID) -> AuditHead | None:
    return await session.get(AuditHead, tenant_id)
