"""Tenant scope for database sessions: the second line of tenant isolation.

Every tenant-scoped unit of work opens its session with ``tenant_session(sessions,
tenant_id)``. The session remembers the tenant, and on PostgreSQL each transaction it
begins runs ``set_config('app.tenant_id', <id>, true)`` (transaction-local), which the
Row-Level Security policies compare against every row's ``tenant_id``. Repository
filters on ``tenant_id`` stay the first line; RLS catches a filter that was forgotten.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

TENANT_KEY = "tenant_id"
_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")


class TenantScopedSession(Session):
    """A sync Session that pushes its tenant into every transaction it begins."""


def _after_begin(session: Session, _transaction: Any, connection: Any) -> None:
    tenant = session.info.get(TENANT_KEY)
    if tenant is not None and connection.dialect.name == "postgresql":
        connection.execute(_SET_TENANT, {"tenant": str(tenant)})


# Registered once at import; applies to every session built on TenantScopedSession.
event.listen(TenantScopedSession, "after_begin", _after_begin)


@asynccontextmanager
async def tenant_session(
    sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID
) -> AsyncIterator[AsyncSession]:
    """A session bound to one tenant; use ``async with session.begin():`` inside it."""
    async with sessions() as session:
        session.info[TENANT_KEY] = tenant_id
        yield session
