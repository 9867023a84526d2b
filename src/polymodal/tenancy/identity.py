"""OAuth2 grants (RFC 6749): password, client credentials and refresh token; token
revocation (RFC 7009); accepting an invitation.

Refresh tokens rotate: each use spends the token and hands out a new one of the same
session (family). A spent token presented again means it was copied: the whole family
is revoked, and the access tokens it issued stop working. Failed logins are counted per
email and client address in the cache (Redis when configured) and audited; past
``login_max_failures`` in the window the next attempts get 429 without a password check.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.db import identity as repo
from polymodal.db import identity_system, repositories, system
from polymodal.db.models import Tenant, User
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimitExceeded,
    Unauthenticated,
    ValidationFailed,
)
from polymodal.domain.principal import Role
from polymodal.tenancy import passwords
from polymodal.tenancy.authn import Authenticator
from polymodal.tenancy.keys import secret_matches
from polymodal.tenancy.rbac import PERMISSIONS, scope_permissions, unknown_scopes
from polymodal.tenancy.tokens import SERVICE, USER, TokenService

REFRESH_PREFIX = "pmr_"
USER_STATUSES = ("active", "disabled", "locked", "deleted")


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    tenant_id: uuid.UUID
    scope: str
    refresh_token: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    role: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _invalid_grant(message: str, code: str = "invalid_grant") -> Unauthenticated:
    return Unauthenticated(message, code=code)


class IdentityService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        tokens: TokenService,
        authenticator: Authenticator,
        cache: Cache,
        refresh_ttl_s: int,
        max_failures: int,
        failure_window_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._tokens = tokens
        self._auth = authenticator
        self._cache = cache
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._max_failures = max_failures
        self._window = failure_window_s
        self._clock = clock

    # --- password grant ---------------------------------------------------------------

    async def password_grant(
        self, *, email: str, password: str, tenant: str | None, scope: str, client: str
    ) -> TokenGrant:
        email = email.strip().lower()
        counter = "login-failures:" + _hash(f"{email}|{client}")
        failures = await self._cache.get(counter)
        if failures is not None and int(failures) >= self._max_failures:
            raise RateLimitExceeded(
                f"Too many failed logins for {email} from this address; try again later.",
                retry_after=self._window,
                code="too_many_failed_logins",
            )
        async with system_session(self._sessions) as session:
            user = await repositories.find_user_by_email(session, email=email)
            memberships = (
                await identity_system.memberships_of(session, user_id=user.id) if user else []
            )
        if not await passwords.verify_password(user.password_hash if user else None, password):
            await self._cache.incr(counter, ttl_s=self._window)
            await self._audit_failure(user, memberships, tenant, email, client, "bad_password")
            raise Unauthenticated("Wrong email or password.", code="invalid_credentials")
        assert user is not None
        if user.status != "active":
            await self._audit_failure(user, memberships, tenant, email, client, user.status)
            raise PermissionDenied(
                f"The user {email} is {user.status}; ask an administrator.",
                code=f"user_{user.status}",
            )
        chosen, role = self._pick_tenant(email, memberships, tenant)
        scopes = self._narrow(scope, Role(role))
        await self._cache.delete(counter)
        now = self._clock()
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        async with tenant_session(self._sessions, chosen.id) as session, session.begin():
            login = await repo.create_session(
                session, tenant_id=chosen.id, user_id=user.id, scopes=scopes, at=now
            )
            await repo.add_refresh_token(
                session,
                tenant_id=chosen.id,
                session_id=login.id,
                token_hash=_hash(refresh),
                at=now,
                expires_at=now + self._refresh_ttl,
            )
            await repositories.append_audit(
                session,
                tenant_id=chosen.id,
                actor=f"user:{user.id}",
                action="auth.login",
                target=str(user.id),
                data={"email": email, "client": client, "session": str(login.id)},
                at=now,
            )
        access = await self._tokens.issue(
            tenant_id=chosen.id,
            subject=user.id,
            kind=USER,
            session_id=login.id,
            roles=[role],
            scopes=scopes,
        )
        return TokenGrant(access, self._tokens.access_ttl_s, chosen.id, " ".join(scopes), refresh)

    @staticmethod
    def _pick_tenant(
        email: str, memberships: list[tuple[Tenant, str]], ref: str | None
    ) -> tuple[Tenant, str]:
        if ref:
            for t, role in memberships:
                if ref in (t.name, str(t.id)):
                    return t, role
            raise PermissionDenied(
                f"tenant: {email} is not a member of tenant {ref!r}.", code="not_a_member"
            )
        if not memberships:
            raise PermissionDenied(f"{email} is not a member of any tenant.", code="not_a_member")
        if len(memberships) > 1:
            names = ", ".join(t.name for t, _ in memberships)
            raise ValidationFailed(
                f"tenant: {email} belongs to several tenants ({names}); name one.",
                param="tenant",
                code="tenant_required",
            )
        return memberships[0]

    @staticmethod
    def _narrow(scope: str, role: Role) -> list[str]:
        """The requested scopes (space-separated), each one the role allows."""
        names = sorted(set(scope.split()))
        unknown = unknown_scopes(names)
        if unknown:
            raise ValidationFailed(
                f"scope: unknown scope {unknown[0]!r}", param="scope", code="invalid_scope"
            )
        beyond = scope_permissions(names) - PERMISSIONS[role]
        if beyond and "*" not in names:
            raise PermissionDenied(
                f"scope: the {role.value} role does not allow {sorted(beyond)[0].value!r}.",
                code="invalid_scope",
            )
        return names

    async def _audit_failure(
        self,
        user: User | None,
        memberships: list[tuple[Tenant, str]],
        ref: str | None,
        email: str,
        client: str,
        reason: str,
    ) -> None:
        """A failed login is written to the audit log of each tenant it concerns (the
        named one, else every tenant of the person); an unknown email has no tenant."""
        targets = [t for t, _ in memberships if not ref or ref in (t.name, str(t.id))]
        now = self._clock()
        for t in targets:
            async with tenant_session(self._sessions, t.id) as session, session.begin():
                await repositories.append_audit(
                    session,
                    tenant_id=t.id,
                    actor=f"user:{user.id}" if user else "anonymous",
                    action="auth.login_failed",
                    target=str(user.id) if user else "",
                    data={"email": email, "client": client, "reason": reason},
                    at=now,
                )

    # --- client credentials -------------------------------------------------------------

    async def client_credentials(
        self, *, client_id: str, client_secret: str, scope: str
    ) -> TokenGrant:
        async with system_session(self._sessions) as session:
            account = await identity_system.find_service_account(session, client_id=client_id)
        if account is None or not secret_matches(client_secret, account.secret_hash):
            raise Unauthenticated("Wrong client_id or client_secret.", code="invalid_client")
        if account.revoked_at is not None:
            raise Unauthenticated("This service account was deleted.", code="invalid_client")
        role = Role(account.role)
        scopes = self._narrow(scope, role) if scope else sorted(account.scopes)
        if (
            scope
            and account.scopes
            and not scope_permissions(scopes) <= scope_permissions(account.scopes)
        ):
            raise PermissionDenied(
                "scope: beyond the service account's own scopes.", code="invalid_scope"
            )
        async with tenant_session(self._sessions, account.tenant_id) as session, session.begin():
            await repositories.append_audit(
                session,
                tenant_id=account.tenant_id,
                actor=f"service:{account.id}",
                action="auth.client_credentials",
                target=str(account.id),
                data={"client_id": client_id, "scope": " ".join(scopes)},
                at=self._clock(),
            )
        access = await self._tokens.issue(
            tenant_id=account.tenant_id,
            subject=account.id,
            kind=SERVICE,
            session_id=account.id,
            roles=[role.value],
            scopes=scopes,
        )
        return TokenGrant(access, self._tokens.access_ttl_s, account.tenant_id, " ".join(scopes))

    # --- refresh --------------------------------------------------------------------------

    async def refresh(self, *, refresh_token: str, client: str) -> TokenGrant:
        async with system_session(self._sessions) as session:
            found = await identity_system.find_refresh_token(
                session, token_hash=_hash(refresh_token)
            )
        if found is None:
            raise _invalid_grant("Unknown refresh token.")
        token, login = found
        now = self._clock()
        if login.revoked_at is not None:
            raise _invalid_grant(
                "This refresh token was revoked (logout, or reuse was detected).",
                "refresh_token_revoked",
            )
        if token.expires_at <= now:
            raise _invalid_grant("This refresh token has expired; log in again.", "token_expired")
        new = REFRESH_PREFIX + secrets.token_urlsafe(32)
        async with tenant_session(self._sessions, login.tenant_id) as session, session.begin():
            spent = await repo.mark_refresh_used(
                session, tenant_id=login.tenant_id, token_id=token.id, at=now
            )
            state = await repo.session_state(
                session, tenant_id=login.tenant_id, session_id=login.id
            )
            role = state[2] if state else None
            active = state is not None and state[1].status == "active" and role is not None
            if spent and active:
                await repo.add_refresh_token(
                    session,
                    tenant_id=login.tenant_id,
                    session_id=login.id,
                    token_hash=_hash(new),
                    at=now,
                    expires_at=now + self._refresh_ttl,
                )
        if not spent:
            await self._revoke_family(login.tenant_id, login.id, "reuse", client)
            raise _invalid_grant(
                "This refresh token was already used: its whole session is now revoked.",
                "refresh_token_reused",
            )
        if not active:
            await self._revoke_family(login.tenant_id, login.id, "user_inactive", client)
            raise _invalid_grant(
                "The user of this refresh token is disabled or no longer a member.",
                "refresh_token_revoked",
            )
        assert role is not None
        access = await self._tokens.issue(
            tenant_id=login.tenant_id,
            subject=login.user_id,
            kind=USER,
            session_id=login.id,
            roles=[role],
            scopes=list(login.scopes),
        )
        scope = " ".join(login.scopes)
        return TokenGrant(access, self._tokens.access_ttl_s, login.tenant_id, scope, new)

    async def _revoke_family(
        self, tenant_id: uuid.UUID, session_id: uuid.UUID, reason: str, client: str
    ) -> None:
        now = self._clock()
        async with tenant_session(self._sessions, tenant_id) as session, session.begin():
            ids = await repo.revoke_sessions(
                session, tenant_id=tenant_id, session_id=session_id, at=now, reason=reason
            )
            if ids:
                await repositories.append_audit(
                    session,
                    tenant_id=tenant_id,
                    actor="system",
                    action="auth.session_revoked",
                    target=str(session_id),
                    data={"reason": reason, "client": client},
                    at=now,
                )
        self._auth.forget_session(USER, session_id)

    # --- revocation ------------------------------------------------------------------------

    async def revoke(self, *, token: str, client: str) -> None:
        """RFC 7009: revoke a refresh token or an access token, and with it the session.
        Unknown tokens are not an error (the spec's answer is 200 either way)."""
        if token.startswith(REFRESH_PREFIX):
            async with system_session(self._sessions) as session:
                found = await identity_system.find_refresh_token(session, token_hash=_hash(token))
            if found is not None:
                await self._revoke_family(found[1].tenant_id, found[1].id, "logout", client)
            return
        try:
            claims = await self._tokens.verify(token)
        except Unauthenticated:
            return
        if claims.kind == USER and claims.session_id is not None:
            await self._revoke_family(claims.tenant_id, claims.session_id, "logout", client)

    # --- invitations ---------------------------------------------------------------------

    async def accept_invitation(
        self, *, token: str, password: str, display_name: str = ""
    ) -> Joined:
        async with system_session(self._sessions) as session:
            invitation = await identity_system.find_invitation(session, token_hash=_hash(token))
            existing = (
                await repositories.find_user_by_email(session, email=invitation.email)
                if invitation
                else None
            )
        now = self._clock()
        if invitation is None:
            raise NotFound("token: no such invitation.", code="invitation_not_found")
        if invitation.accepted_at is not None:
            raise InvalidRequest(
                "token: this invitation was already accepted.", code="invitation_used"
            )
        if invitation.expires_at <= now:
            raise InvalidRequest(
                f"token: this invitation expired at {invitation.expires_at:%Y-%m-%d %H:%M} UTC; "
                "ask for a new one.",
                code="invitation_expired",
            )
        if existing is not None and existing.password_hash:
            if not await passwords.verify_password(existing.password_hash, password):
                raise Unauthenticated(
                    f"password: {invitation.email} already has an account; give its password.",
                    code="invalid_credentials",
                )
            new_hash = None
        else:
            new_hash = await passwords.hash_password(password)
        tenant_id = invitation.tenant_id
        async with tenant_session(self._sessions, tenant_id) as session, session.begin():
            user = existing
            if user is None:
                user = await system.create_user(
                    session, email=invitation.email, display_name=display_name
                )
            if new_hash is not None:
                user = await session.merge(user)
                user.password_hash = new_hash
            if await repo.get_membership(session, tenant_id=tenant_id, user_id=user.id):
                raise InvalidRequest(
                    f"{invitation.email} is already a member of this tenant.", code="member_exists"
                )
            await repositories.add_member(
                session, tenant_id=tenant_id, user=user, role=invitation.role
            )
            row = await session.merge(invitation)
            row.accepted_at = now
            await repositories.append_audit(
                session,
                tenant_id=tenant_id,
                actor=f"user:{user.id}",
                action="member.add",
                target=str(user.id),
                data={"role": invitation.role, "invitation": str(invitation.id)},
                at=now,
            )
        return Joined(tenant_id=tenant_id, user_id=user.id, role=invitation.role)

    async def set_password(self, *, email: str, password: str) -> None:
        """An operator sets a person's password (CLI)."""
        new_hash = await passwords.hash_password(password)
        async with system_session(self._sessions) as session, session.begin():
            user = await repositories.find_user_by_email(session, email=email)
            if user is None:
                raise NotFound(f"no user {email!r}", code="user_not_found")
            user.password_hash = new_hash

    async def set_user_status(self, *, email: str, status: str) -> None:
        """An operator enables, disables, locks or deletes a person (every tenant). A
        disabled, locked or deleted user cannot log in, and their access tokens stop
        working (in this process at once, in others within the auth cache TTL)."""
        if status not in USER_STATUSES:
            raise ValidationFailed(
                f"status: must be one of {', '.join(USER_STATUSES)}", param="status"
            )
        async with system_session(self._sessions) as session, session.begin():
            user = await identity_system.set_user_status(session, email=email, status=status)
        if user is None:
            raise NotFound(f"no user {email!r}", code="user_not_found")
        self._auth.forget_all_subjects()
