"""Tenant-scoped data access. ``tenant_id`` is a required keyword of every function here.

Functions take an open ``AsyncSession`` and never commit: the calling service owns the
transaction, so a failed step leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.dialects import insert_ignoring
from polymodal.db.models import (
    ApiKey,
    AuditEvent,
    AuditHead,
    Membership,
    Tenant,
    UsageEvent,
    User,
)

GENESIS_HASH = "0" * 64


# --- members ------------------------------------------------------------------------------


async def find_user_by_email(session: AsyncSession, *, email: str) -> User | None:
    """Users are people, shared across tenants; only memberships are tenant-owned."""
    result = await session.execute(select(User).where(User.email == email.lower()))
    return result.scalar_one_or_none()


async def add_member(
    session: AsyncSession, *, tenant_id: uuid.UUID, user: User, role: str
) -> Membership:
    membership = Membership(tenant_id=tenant_id, user_id=user.id, role=role)
    session.add(membership)
    await session.flush()
    return membership


async def get_member(
    session: AsyncSession, *, tenant_id: uuid.UUID, email: str
) -> tuple[User, str] | None:
    result = await session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id, User.email == email.lower())
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


async def list_members(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[tuple[User, str]]:
    result = await session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.tenant_id == tenant_id)
        .order_by(User.email)
    )
    return [(u, r) for u, r in result.all()]


async def roles_of(session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[str]:
    result = await session.execute(
        select(Membership.role).where(
            Membership.tenant_id == tenant_id, Membership.user_id == user_id
        )
    )
    return list(result.scalars())


# --- API keys -----------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    prefix: str,
    secret_hash: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> ApiKey:
    key = ApiKey(
        tenant_id=tenant_id,
        user_id=user_id,
        name=name,
        prefix=prefix,
        secret_hash=secret_hash,
        scopes=scopes,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key


async def list_api_keys(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[ApiKey]:
    result = await session.execute(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
    )
    return list(result.scalars())


async def get_api_key(
    session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKey | None:
    result = await session.execute(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
    )
    return result.scalar_one_or_none()


async def revoke_api_key(
    session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID, at: datetime
) -> bool:
    """Mark a key revoked; False when the tenant has no such live key."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


# --- audit --------------------------------------------------------------------------------


def audit_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + payload).hexdigest()


def audit_fields(
    *,
    tenant_id: uuid.UUID,
    actor: str,
    action: str,
    target: str,
    data: dict[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    """What an event's hash covers (the verifier recomputes it from the stored row)."""
    return {
        "tenant_id": str(tenant_id),
        "actor": actor,
        "action": action,
        "target": target,
        "data": data,
        "created_at": created_at.isoformat(),
    }


async def append_audit(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    actor: str,
    action: str,
    target: str = "",
    data: dict[str, Any] | None = None,
    at: datetime,
) -> AuditEvent:
    """Append one event to the tenant's chain. The head row is created if missing and
    locked (PostgreSQL ``FOR UPDATE``; SQLite has one writer), so concurrent appends queue
    instead of forking the chain."""
    await session.execute(
        insert_ignoring(session, AuditHead).values(tenant_id=tenant_id, seq=0, hash=GENESIS_HASH)
    )
    head = (
        await session.execute(
            select(AuditHead).where(AuditHead.tenant_id == tenant_id).with_for_update()
        )
    ).scalar_one()
    body = data or {}
    at = at.astimezone(UTC)  # hashed as stored: the verifier reads UTC back
    fields = audit_fields(
        tenant_id=tenant_id, actor=actor, action=action, target=target, data=body, created_at=at
    )
    event = AuditEvent(
        tenant_id=tenant_id,
        seq=head.seq + 1,
        actor=actor,
        action=action,
        target=target,
        data=body,
        created_at=at,
        prev_hash=head.hash,
        hash=audit_hash(head.hash, fields),
    )
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    await session.flush()
    return event


async def list_audit(
    session: AsyncSession, *, tenant_id: uuid.UUID, limit: int = 100
) -> list[AuditEvent]:
    result = await session.execute(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    return list(result.scalars())


# --- usage ----------------------------------------------------------------------------------


async def list_usage(
    session: AsyncSession, *, tenant_id: uuid.UUID, limit: int = 100
) -> list[UsageEvent]:
    result = await session.execute(
        select(UsageEvent)
        .where(UsageEvent.tenant_id == tenant_id)
        .order_by(UsageEvent.id.desc())
        .limit(limit)
    )
    return list(result.scalars())


# --- tenant settings ------------------------------------------------------------------------


async def get_tenant_policy(session: AsyncSession, *, tenant_id: uuid.UUID) -> dict[str, Any]:
    result = await session.execute(select(Tenant.policy).where(Tenant.id == tenant_id))
    return dict(result.scalar_one_or_none() or {})


async def set_tenant_policy(
    session: AsyncSession, *, tenant_id: uuid.UUID, policy: dict[str, Any]
) -> None:
    await session.execute(update(Tenant).where(Tenant.id == tenant_id).values(policy=policy))
