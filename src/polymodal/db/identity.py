"""Tenant-scoped data access for identity: memberships, login sessions and refresh
tokens, service accounts, invitations. ``tenant_id`` is a required keyword everywhere;
functions never commit (the calling service owns the transaction).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import ApiKey, Membership, User
from polymodal.db.models_identity import AuthSession, Invitation, RefreshToken, ServiceAccount

# --- members ------------------------------------------------------------------------------


async def get_membership(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID, for_update: bool = False
) -> tuple[User, Membership] | None:
    query = (
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    )
    if for_update:
        query = query.with_for_update(of=Membership)
    row = (await session.execute(query)).one_or_none()
    return None if row is None else (row[0], row[1])


async def owner_ids(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[uuid.UUID]:
    """The tenant's owners, rows locked (PostgreSQL) so two demotions cannot both pass
    the last-owner check."""
    result = await session.execute(
        select(Membership.user_id)
        .where(Membership.tenant_id == tenant_id, Membership.role == "owner")
        .with_for_update()
    )
    return list(result.scalars())


async def set_role(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> None:
    await session.execute(
        update(Membership)
        .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
        .values(role=role)
    )


async def remove_member(session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await session.execute(
        delete(Membership).where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    )


async def key_prefixes_of(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> list[str]:
    result = await session.execute(
        select(ApiKey.prefix).where(ApiKey.tenant_id == tenant_id, ApiKey.user_id == user_id)
    )
    return list(result.scalars())


# --- sessions and refresh tokens --------------------------------------------------------------


async def create_session(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    scopes: list[str],
    at: datetime,
) -> AuthSession:
    row = AuthSession(tenant_id=tenant_id, user_id=user_id, scopes=scopes, created_at=at)
    session.add(row)
    await session.flush()
    return row


async def add_refresh_token(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    session_id: uuid.UUID,
    token_hash: str,
    at: datetime,
    expires_at: datetime,
) -> RefreshToken:
    row = RefreshToken(
        tenant_id=tenant_id,
        session_id=session_id,
        token_hash=token_hash,
        created_at=at,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def mark_refresh_used(
    session: AsyncSession, *, tenant_id: uuid.UUID, token_id: uuid.UUID, at: datetime
) -> bool:
    """Spend a refresh token; False when it was spent already (by a concurrent request
    or a thief): the caller treats that as reuse."""
    result = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.tenant_id == tenant_id,
            RefreshToken.id == token_id,
            RefreshToken.used_at.is_(None),
        )
        .values(used_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def revoke_sessions(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    at: datetime,
    reason: str,
    session_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke one session, or every live session of a user; returns the ids revoked."""
    where = [AuthSession.tenant_id == tenant_id, AuthSession.revoked_at.is_(None)]
    if session_id is not None:
        where.append(AuthSession.id == session_id)
    if user_id is not None:
        where.append(AuthSession.user_id == user_id)
    ids = list((await session.execute(select(AuthSession.id).where(*where))).scalars())
    if ids:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.tenant_id == tenant_id, AuthSession.id.in_(ids))
            .values(revoked_at=at, revoked_reason=reason)
        )
    return ids


async def session_state(
    session: AsyncSession, *, tenant_id: uuid.UUID, session_id: uuid.UUID
) -> tuple[AuthSession, User, str | None] | None:
    """A login session with its user and the user's current role in the tenant (None
    when no longer a member)."""
    row = (
        await session.execute(
            select(AuthSession, User, Membership.role)
            .join(User, User.id == AuthSession.user_id)
            .outerjoin(
                Membership,
                (Membership.user_id == User.id) & (Membership.tenant_id == AuthSession.tenant_id),
            )
            .where(AuthSession.tenant_id == tenant_id, AuthSession.id == session_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


# --- service accounts ------------------------------------------------------------------------


async def create_service_account(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    client_id: str,
    secret_hash: str,
    role: str,
    scopes: list[str],
    created_by: uuid.UUID,
    at: datetime,
) -> ServiceAccount:
    row = ServiceAccount(
        tenant_id=tenant_id,
        name=name,
        client_id=client_id,
        secret_hash=secret_hash,
        role=role,
        scopes=scopes,
        created_by=created_by,
        created_at=at,
    )
    session.add(row)
    await session.flush()
    return row


async def list_service_accounts(
    session: AsyncSession, *, tenant_id: uuid.UUID
) -> list[ServiceAccount]:
    result = await session.execute(
        select(ServiceAccount)
        .where(ServiceAccount.tenant_id == tenant_id)
        .order_by(ServiceAccount.created_at)
    )
    return list(result.scalars())


async def get_service_account(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> ServiceAccount | None:
    result = await session.execute(
        select(ServiceAccount).where(
            ServiceAccount.tenant_id == tenant_id, ServiceAccount.id == account_id
        )
    )
    return result.scalar_one_or_none()


# --- invitations --------------------------------------------------------------------------------


async def create_invitation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    email: str,
    role: str,
    token_hash: str,
    invited_by: uuid.UUID,
    at: datetime,
    expires_at: datetime,
) -> Invitation:
    row = Invitation(
        tenant_id=tenant_id,
        email=email,
        role=role,
        token_hash=token_hash,
        invited_by=invited_by,
        created_at=at,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def pending_invitations(
    session: AsyncSession, *, tenant_id: uuid.UUID, now: datetime
) -> list[Invitation]:
    result = await session.execute(
        select(Invitation)
        .where(
            Invitation.tenant_id == tenant_id,
            Invitation.accepted_at.is_(None),
            Invitation.expires_at > now,
        )
        .order_by(Invitation.created_at)
    )
    return list(result.scalars())


async def count_members(session: AsyncSession, *, tenant_id: uuid.UUID) -> int:
    result = await session.execute(
        select(func.count()).select_from(Membership).where(Membership.tenant_id == tenant_id)
    )
    return int(result.scalar_one())


async def list_memberships(
    session: AsyncSession, *, tenant_id: uuid.UUID
) -> list[tuple[User, Membership]]:
    result = await session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id)
        .order_by(User.email)
    )
    return [(u, m) for u, m in result.all()]


async def live_session_ids(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> list[uuid.UUID]:
    result = await session.execute(
        select(AuthSession.id).where(
            AuthSession.tenant_id == tenant_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
        )
    )
    return list(result.scalars())
