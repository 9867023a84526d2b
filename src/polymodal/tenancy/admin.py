"""Operator actions on tenants, users and keys (used by `polymodal admin` and, later, the
management API). Each function is one transaction and writes its own audit event.

Finding a tenant by name or id, and creating or counting tenants, precede any tenant, so
they run in a system session; everything done inside a tenant runs in that tenant's
session, under Row-Level Security like the API.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import repositories, system
from polymodal.db.models import ApiKey, Tenant
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.errors import Conflict, InvalidRequest, NotFound
from polymodal.domain.principal import Role
from polymodal.tenancy.keys import hash_secret, new_key

PLANS = ("free", "pro", "enterprise")
DEMO_TENANT = "demo"
DEMO_OWNER = "owner@demo.local"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key. ``secret`` is the full key, shown once and never stored."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    prefix: str
    secret: str


def _now() -> datetime:
    return datetime.now(UTC)


async def create_tenant(
    sessions: async_sessionmaker[AsyncSession], *, name: str, plan: str = "free", actor: str
) -> Tenant:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("tenant name must be 1-100 characters", code="invalid_name")
    if plan not in PLANS:
        raise InvalidRequest(f"plan must be one of {', '.join(PLANS)}", code="invalid_plan")
    async with system_session(sessions) as session, session.begin():
        if await system.find_tenant(session, ref=name) is not None:
            raise Conflict(f"tenant {name!r} already exists", code="tenant_exists")
        tenant = await system.create_tenant(session, name=name, plan=plan)
        await repositories.append_audit(
            session,
            tenant_id=tenant.id,
            actor=actor,
            action="tenant.create",
            target=str(tenant.id),
            data={"name": name, "plan": plan},
            at=_now(),
        )
    return tenant


async def list_tenants(sessions: async_sessionmaker[AsyncSession]) -> list[Tenant]:
    async with system_session(sessions) as session:
        return await system.list_tenants(session)


async def _tenant(sessions: async_sessionmaker[AsyncSession], ref: str) -> Tenant:
    """The tenant an operator names (by name or id): a lookup that precedes the tenant."""
    async with system_session(sessions) as session:
        tenant = await system.find_tenant(session, ref=ref)
    if tenant is None:
        raise NotFound(f"no tenant {ref!r}", code="tenant_not_found")
    return tenant


async def add_user(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tenant: str,
    email: str,
    role: str,
    actor: str,
    display_name: str = "",
) -> uuid.UUID:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise InvalidRequest(f"email {email!r} is not an email address", code="invalid_email")
    if role not in {r.value for r in Role}:
        raise InvalidRequest(
            f"role must be one of {', '.join(r.value for r in Role)}", code="invalid_role"
        )
    t = await _tenant(sessions, tenant)
    async with tenant_session(sessions, t.id) as session, session.begin():
        user = await repositories.find_user_by_email(session, email=email)
        if user is None:
            user = await system.create_user(session, email=email, display_name=display_name)
        elif await repositories.get_member(session, tenant_id=t.id, email=email):
            raise Conflict(f"{email} is already a member of {t.name}", code="member_exists")
        await repositories.add_member(session, tenant_id=t.id, user=user, role=role)
        await repositories.append_audit(
            session,
            tenant_id=t.id,
            actor=actor,
            action="member.add",
            target=str(user.id),
            data={"role": role},
            at=_now(),
        )
        return user.id


async def issue_key(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tenant: str,
    email: str,
    actor: str,
    name: str = "",
    scopes: list[str] | None = None,
    expires_in: timedelta | None = None,
) -> IssuedKey:
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidRequest("expiry must be in the future", code="invalid_expiry")
    full, parts = new_key()
    t = await _tenant(sessions, tenant)
    async with tenant_session(sessions, t.id) as session, session.begin():
        member = await repositories.get_member(session, tenant_id=t.id, email=email)
        if member is None:
            raise NotFound(f"{email} is not a member of {t.name}", code="member_not_found")
        try:
            key = await repositories.create_api_key(
                session,
                tenant_id=t.id,
                user_id=member[0].id,
                name=name,
                prefix=parts.prefix,
                secret_hash=hash_secret(parts.secret),
                scopes=sorted(set(scopes or [])),
                expires_at=None if expires_in is None else _now() + expires_in,
            )
        except IntegrityError as e:  # a prefix collision: 36^12, but say so plainly
            raise Conflict("key prefix collision, try again", code="key_collision") from e
        await repositories.append_audit(
            session,
            tenant_id=t.id,
            actor=actor,
            action="key.create",
            target=str(key.id),
            data={"name": name, "scopes": key.scopes},
            at=_now(),
        )
        return IssuedKey(id=key.id, tenant_id=t.id, prefix=parts.prefix, secret=full)


async def revoke_key(
    sessions: async_sessionmaker[AsyncSession], *, tenant: str, key_id: uuid.UUID, actor: str
) -> None:
    t = await _tenant(sessions, tenant)
    async with tenant_session(sessions, t.id) as session, session.begin():
        if not await repositories.revoke_api_key(session, tenant_id=t.id, key_id=key_id, at=_now()):
            raise NotFound(f"no live key {key_id} in {t.name}", code="key_not_found")
        await repositories.append_audit(
            session,
            tenant_id=t.id,
            actor=actor,
            action="key.revoke",
            target=str(key_id),
            at=_now(),
        )


async def list_keys(sessions: async_sessionmaker[AsyncSession], *, tenant: str) -> list[ApiKey]:
    t = await _tenant(sessions, tenant)
    async with tenant_session(sessions, t.id) as session:
        return await repositories.list_api_keys(session, tenant_id=t.id)


async def bootstrap_demo(
    sessions: async_sessionmaker[AsyncSession], *, key_file: Path
) -> IssuedKey | None:
    """First run: a `demo` tenant with an owner key, when no tenant exists yet.

    The key is written to ``key_file`` (mode 600). Returns None when tenants already
    exist, so a second run keeps the data and the key.
    """
    async with system_session(sessions) as session:
        if await system.count_tenants(session) > 0:
            return None
    await create_tenant(sessions, name=DEMO_TENANT, plan="free", actor="bootstrap")
    await add_user(
        sessions,
        tenant=DEMO_TENANT,
        email=DEMO_OWNER,
        role="owner",
        actor="bootstrap",
        display_name="Demo owner",
    )
    issued = await issue_key(
        sessions, tenant=DEMO_TENANT, email=DEMO_OWNER, actor="bootstrap", name="demo owner key"
    )
    await asyncio.to_thread(write_key_file, key_file, issued.secret)
    return issued


def write_key_file(path: Path, secret: str) -> None:
    """Write a key readable by its owner only (created 600 before the secret goes in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(secret + "\n", encoding="utf-8")


ROUTING_POLICY_KEYS = frozenset(
    {"allowed_providers", "allowed_deployments", "max_tier", "default_tier", "continue_streams"}
)
TIER_NAMES = ("simple", "complex", "critical")


async def set_routing_policy(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tenant: str,
    policy: dict[str, object],
    actor: str,
) -> dict[str, object]:
    """Replace a tenant's routing policy (which providers/deployments, tier bounds)."""
    unknown = sorted(set(policy) - ROUTING_POLICY_KEYS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown routing policy key", code="invalid_policy")
    for key in ("max_tier", "default_tier"):
        value = policy.get(key)
        if value is not None and value not in TIER_NAMES:
            raise InvalidRequest(
                f"{key}: must be one of {', '.join(TIER_NAMES)}", code="invalid_policy"
            )
    for key in ("allowed_providers", "allowed_deployments"):
        value = policy.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise InvalidRequest(f"{key}: must be a list of names", code="invalid_policy")
    t = await _tenant(sessions, tenant)
    async with tenant_session(sessions, t.id) as session, session.begin():
        await repositories.set_tenant_policy(session, tenant_id=t.id, policy=dict(policy))
        await repositories.append_audit(
            session,
            tenant_id=t.id,
            actor=actor,
            action="tenant.policy",
            target=str(t.id),
            data=dict(policy),
            at=_now(),
        )
    return dict(policy)
