"""Identity lookups made before a tenant is known (documented exceptions to the
tenant-filter rule, like db/system.py): a login names an email, a refresh token or a
client id, and only the row found says which tenant the caller belongs to. Every
function here finds by an unguessable or caller-supplied key and returns the row's own
``tenant_id`` for the tenant-scoped work that follows.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import Membership, Tenant, User
from polymodal.db.models_identity import AuthSession, Invitation, RefreshToken, ServiceAccount


async def memberships_of(session: AsyncSession, *, user_id: uuid.UUID) -> list[tuple[Tenant, str]]:
    """The tenants a person belongs to, with their role in each (login picks one)."""
    result = await session.execute(
        select(Tenant, Membership.role)
        .join(Membership, Membership.tenant_id == Tenant.id)
        .where(Membership.user_id == user_id)
        .order_by(Tenant.name)
    )
    return [(t, r) for t, r in result.all()]


async def find_refresh_token(
    session: AsyncSession, *, token_hash: str
) -> tuple[RefreshToken, AuthSession] | None:
    row = (
        await session.execute(
            select(RefreshToken, AuthSession)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def find_service_account(session: AsyncSession, *, client_id: str) -> ServiceAccount | None:
    result = await session.execute(
        select(ServiceAccount).where(ServiceAccount.client_id == client_id)
    )
    return result.scalar_one_or_none()


async def service_account_by_id(
    session: AsyncSession, *, account_id: uuid.UUID
) -> ServiceAccount | None:
    return await session.get(ServiceAccount, account_id)


async def find_invitation(session: AsyncSession, *, token_hash: str) -> Invitation | None:
    result = await session.execute(select(Invitation).where(Invitation.token_hash == token_hash))
    return result.scalar_one_or_none()


async def set_user_status(session: AsyncSession, *, email: str, status: str) -> User | None:
    """An operator action on a person (across every tenant they belong to)."""
    user = (
        await session.execute(select(User).where(User.email == email.lower()))
    ).scalar_one_or_none()
    if user is not None:
        await session.execute(update(User).where(User.id == user.id).values(status=status))
    return user
