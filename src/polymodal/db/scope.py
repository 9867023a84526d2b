"""Tenant scope for database sessions: the second line of tenant isolation.

Every tenant-scoped unit of work opens its session with ``tenant_session(sessions,
tenant_id)``. The session remembers the tenant, and on PostgreSQL each transaction it
begins runs ``set_config('app.tenant_id', <id>, true)`` (transaction-local), which the
Row-Level Security policies compare against every row's ``tenant_id``. Repository
filters on ``tenant_id`` stay the first line; RLS catches a filter that was forgotten.

Pooled PostgreSQL connections run as the application role (``database_rls_role``, see
`polymodal.db.engine`), which RLS holds. The few documented lookups that must cross
tenants or precede one (a key by its prefix, tenants by name for the operator CLI, the
usage ledger's mixed batches; see `polymodal.db.system`) open ``system_session``, which
switches back to the URL's own user for that one transaction (``SET LOCAL ROLE NONE``).
A session that is neither sees no tenant's rows at all.
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
SYSTEM_KEY = "system"
# Set on each pooled connection's info by polymodal.db.engine: the role configured, and
# whether the connection switched to it.
ROLE_CONFIGURED = "polymodal_rls_role"
ROLE_APPLIED = "polymodal_rls_role_applied"
_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")
_LEAVE_ROLE = text("SET LOCAL ROLE NONE")


class RlsRoleMissing(RuntimeError):
    """The configured application role does not exist: the database is not migrated
    (or was restored without its roles). Refuse rather than run unconfined."""


class TenantScopedSession(Session):
    """A sync Session that pushes its tenant into every transaction it begins."""


def _after_begin(session: Session, _transaction: Any, connection: Any) -> None:
    if connection.dialect.name != "postgresql":
        return
    applied = bool(connection.info.get(ROLE_APPLIED))
    if session.info.get(SYSTEM_KEY):
        if applied:
            connection.execute(_LEAVE_ROLE)
        return
    role = connection.info.get(ROLE_CONFIGURED)
    if role and not applied:
        raise RlsRoleMissing(
            f"database role {role!r} does not exist; run `polymodal migrate` "
            "(it creates the role Row-Level Security confines the application to)"
        )
    tenant = session.info.get(TENANT_KEY)
    if tenant is not None:
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


@asynccontextmanager
async def system_session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session outside Row-Level Security, for the documented cross-tenant and
    pre-tenant lookups only (`polymodal.db.system`, operator actions). Everything else
    uses `tenant_session`."""
    async with sessions() as session:
        session.info[SYSTEM_KEY] = True
        yield session
