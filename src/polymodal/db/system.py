"""The few lookups that happen before a tenant is known: tenant admin and key resolution.

These are the only queries without a tenant filter. They serve the operator CLI and the
first step of authentication (a key's prefix says which tenant it belongs to). Callers
run them in a `polymodal.db.scope.system_session`, the one kind of session Row-Level
Security does not hold; tenant-owned work never does.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import ApiKey, Tenant, User


async def create_tenant(session: AsyncSession, *, name: str, plan: str) -> Tenant:
    tenant = Tenant(name=name, plan=plan)
    session.add(tenant)
    await session.flush()
    return tenant


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    result = await session.execute(select(Tenant).order_by(Tenant.created_at))
    return list(result.scalars())


async def count_tenants(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Tenant))).scalar_one())


async def find_tenant(session: AsyncSession, *, ref: str) -> Tenant | None:
    """A tenant by id or by name."""
    try:
        tenant_id = uuid.UUID(ref)
    except ValueError:
        result = await session.execute(select(Tenant).where(Tenant.name == ref))
        return result.scalar_one_or_none()
    return await session.get(Tenant, tenant_id)


async def create_user(session: AsyncSession, *, email: str, display_name: str) -> User:
    user = User(email=email.lower(), display_name=display_name)
    session.add(user)
    await session.flush()
    return user


async def find_key_by_prefix(session: AsyncSession, *, prefix: str) -> ApiKey | None:
    result = await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    return result.scalar_one_or_none()
