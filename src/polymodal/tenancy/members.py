"""Members of a tenant: list, invite (by email, with a role, expiring), change a role,
remove. Checked here from the permission table: ``members:read`` / ``members:write``;
the owner role is granted or taken only with ``owners:write``; nobody grants a role
above their own; the last owner can be neither demoted nor removed. Each change is one
transaction with its audit event.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import identity as repo
from polymodal.db import repositories
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Conflict, NotFound, ValidationFailed
from polymodal.domain.principal import Principal, Role
from polymodal.tenancy.authn import Authenticator
from polymodal.tenancy.rbac import Permission, require, require_grant
from polymodal.tenancy.tokens import USER

INVITATION_PREFIX = "pmi_"


@dataclass(frozen=True, slots=True)
class MemberView:
    user_id: uuid.UUID
    email: str
    display_name: str
    role: str
    status: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class InvitationView:
    id: uuid.UUID
    email: str
    role: str
    expires_at: datetime
    token: str | None = None  # only in the answer that creates it


def actor(principal: Principal) -> str:
    """What the audit log calls the caller."""
    return f"key:{principal.key_id}" if principal.key_id else f"user:{principal.user_id}"


def parse_role(value: str, *, param: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError as e:
        raise ValidationFailed(
            f"{param}: must be one of {', '.join(r.value for r in Role)}",
            param=param,
            code="invalid_role",
        ) from e


class MemberService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        authenticator: Authenticator,
        invitation_ttl_s: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._auth = authenticator
        self._invitation_ttl = timedelta(seconds=invitation_ttl_s)
        self._clock = clock

    async def list_members(
        self, principal: Principal
    ) -> tuple[list[MemberView], list[InvitationView]]:
        require(principal, Permission.MEMBERS_READ)
        tid = principal.tenant_id
        async with tenant_session(self._sessions, tid) as session:
            members = await repo.list_memberships(session, tenant_id=tid)
            pending = await repo.pending_invitations(session, tenant_id=tid, now=self._clock())
        return (
            [
                MemberView(u.id, u.email, u.display_name, m.role, u.status, m.created_at)
                for u, m in members
            ],
            [InvitationView(i.id, i.email, i.role, i.expires_at) for i in pending],
        )

    async def invite(self, principal: Principal, *, email: str, role: str) -> InvitationView:
        wanted = parse_role(role)
        require_grant(principal, wanted, to_manage=Permission.MEMBERS_WRITE)
        email = email.strip().lower()
        if "@" not in email or len(email) > 254:
            raise ValidationFailed(
                f"email: {email!r} is not an email address", param="email", code="invalid_email"
            )
        tid = principal.tenant_id
        token = INVITATION_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            if await repositories.get_member(session, tenant_id=tid, email=email):
                raise Conflict(f"email: {email} is already a member", code="member_exists")
            row = await repo.create_invitation(
                session,
                tenant_id=tid,
                email=email,
                role=wanted.value,
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                invited_by=principal.user_id,
                at=now,
                expires_at=now + self._invitation_ttl,
            )
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="member.invite",
                target=email,
                data={"role": wanted.value, "invitation": str(row.id)},
                at=now,
            )
        return InvitationView(row.id, email, wanted.value, row.expires_at, token)

    async def change_role(
        self, principal: Principal, user_id: uuid.UUID, *, role: str
    ) -> MemberView:
        wanted = parse_role(role)
        require_grant(principal, wanted, to_manage=Permission.MEMBERS_WRITE)
        tid = principal.tenant_id
        now = self._clock()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            found = await repo.get_membership(
                session, tenant_id=tid, user_id=user_id, for_update=True
            )
            if found is None:
                raise NotFound(f"no member {user_id} in this tenant", code="member_not_found")
            user, membership = found
            current = Role(membership.role)
            require_grant(principal, current, to_manage=Permission.MEMBERS_WRITE)
            if current is Role.OWNER and wanted is not Role.OWNER:
                await self._keep_an_owner(session, tid, user_id)
            await repo.set_role(session, tenant_id=tid, user_id=user_id, role=wanted.value)
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="member.role",
                target=str(user_id),
                data={"from": current.value, "to": wanted.value},
                at=now,
            )
            prefixes = await repo.key_prefixes_of(session, tenant_id=tid, user_id=user_id)
            live = await repo.live_session_ids(session, tenant_id=tid, user_id=user_id)
        self._forget(prefixes)
        for sid in live:
            self._auth.forget_subject(USER, sid)
        return MemberView(
            user.id, user.email, user.display_name, wanted.value, user.status, membership.created_at
        )

    async def remove(self, principal: Principal, user_id: uuid.UUID) -> None:
        require(principal, Permission.MEMBERS_WRITE)
        tid = principal.tenant_id
        now = self._clock()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            found = await repo.get_membership(
                session, tenant_id=tid, user_id=user_id, for_update=True
            )
            if found is None:
                raise NotFound(f"no member {user_id} in this tenant", code="member_not_found")
            current = Role(found[1].role)
            require_grant(principal, current, to_manage=Permission.MEMBERS_WRITE)
            if current is Role.OWNER:
                await self._keep_an_owner(session, tid, user_id)
            await repo.remove_member(session, tenant_id=tid, user_id=user_id)
            revoked = await repo.revoke_sessions(
                session, tenant_id=tid, user_id=user_id, at=now, reason="member_removed"
            )
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="member.remove",
                target=str(user_id),
                data={"role": current.value, "sessions_revoked": len(revoked)},
                at=now,
            )
            prefixes = await repo.key_prefixes_of(session, tenant_id=tid, user_id=user_id)
        self._forget(prefixes)
        for sid in revoked:
            self._auth.forget_session(USER, sid)

    @staticmethod
    async def _keep_an_owner(session: AsyncSession, tid: uuid.UUID, leaving: uuid.UUID) -> None:
        owners = await repo.owner_ids(session, tenant_id=tid)
        if not [o for o in owners if o != leaving]:
            raise Conflict(
                "This is the tenant's last owner: make another member owner first.",
                code="last_owner",
            )

    def _forget(self, prefixes: list[str]) -> None:
        """A member's keys carry cached roles: drop them in this process."""
        for prefix in prefixes:
            self._auth.forget(prefix)
