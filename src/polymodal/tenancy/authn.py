"""The one entry point of authentication: ``Authorization: Bearer <credential>`` where
the credential is an API key (``pm_...``), one of polymodal's access tokens (JWT), or a
token of the configured external OIDC issuer. Each yields a `Principal`.

The hot path stays off the database: API keys are cached by `KeyAuthenticator`; a
verified access token is cached with its principal until the sooner of its expiry and
``cache_ttl_s``, and the state behind it (session not revoked, user active and still a
member, roles) is cached per session for ``cache_ttl_s``. Revocation in this process
takes effect at once; in other processes within ``cache_ttl_s``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.memory import TTLCache
from polymodal.db import identity as repo
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Unauthenticated
from polymodal.domain.principal import Principal, Role
from polymodal.tenancy.auth import KeyAuthenticator
from polymodal.tenancy.keys import KEY_PREFIX
from polymodal.tenancy.oidc import ExternalIssuer
from polymodal.tenancy.tokens import SERVICE, AccessClaims, TokenService, unverified_header

_STATUS_CODES = {"disabled": "user_disabled", "locked": "user_locked", "deleted": "user_deleted"}


@dataclass(frozen=True, slots=True)
class _Subject:
    """What the database says about a token's session right now."""

    roles: frozenset[Role]
    scopes: frozenset[str] | None  # service accounts: their own scopes


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    session_key: str
    expires_at: float
    kid: str
    subject: _Subject  # still the cached one, or the roles changed since


def bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(
            "Missing credentials: send 'Authorization: Bearer <API key or access token>'.",
            code="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            "Malformed Authorization header: expected 'Bearer <API key or access token>'.",
            code="malformed_authorization",
        )
    return token


def session_key(kind: str, session_id: uuid.UUID) -> str:
    return f"{kind}:{session_id}"


class Authenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        keys: KeyAuthenticator,
        tokens: TokenService,
        external: ExternalIssuer | None,
        cache_ttl_s: float,
        max_entries: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self.keys = keys
        self.tokens = tokens
        self.external = external
        self._ttl = cache_ttl_s
        self._verified: TTLCache[_Verified] = TTLCache(max_entries=max_entries)
        self._subjects: TTLCache[_Subject] = TTLCache(max_entries=max_entries)
        self._revoked: TTLCache[bool] = TTLCache(max_entries=max_entries)

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer(authorization)
        if token.startswith(KEY_PREFIX):
            return await self.keys.authenticate(f"Bearer {token}")
        if token.count(".") == 2:
            return await self._token(token)
        raise Unauthenticated(
            "Invalid credentials: expected an API key (pm_...) or an access token.",
            code="invalid_api_key",
        )

    def forget(self, prefix: str) -> None:
        """Drop a cached API key (see `KeyAuthenticator.forget`)."""
        self.keys.forget(prefix)

    def forget_session(self, kind: str, session_id: uuid.UUID) -> None:
        """A session (or service account) was revoked: refuse its tokens here at once."""
        key = session_key(kind, session_id)
        self._subjects.pop(key)
        self._revoked.set(key, True, ttl_s=self.tokens.access_ttl_s + 60)

    def forget_all_subjects(self) -> None:
        """An operator changed a person's status: reload every session's state."""
        self._subjects.clear()
        self._verified.clear()
        self.keys.clear()

    def forget_subject(self, kind: str, session_id: uuid.UUID) -> None:
        """Roles or status changed: reload them on the next request."""
        self._subjects.pop(session_key(kind, session_id))

    async def _token(self, token: str) -> Principal:
        hit = self._verified.get(token) if self._ttl > 0 else None
        if hit is not None:
            if self._revoked.get(hit.session_key):
                raise _revoked()
            if hit.expires_at <= time.time():
                raise Unauthenticated(
                    "The access token has expired; get a new one.", code="token_expired"
                )
            if (
                self.tokens.ring.is_live(hit.kid)
                and self._subjects.get(hit.session_key) is hit.subject
            ):
                return hit.principal
            self._verified.pop(token)  # key retired or roles changed: verify again
        if self.external is not None and self._issuer_of(token) == self.external.issuer:
            return await self.external.verify(token)
        claims = await self.tokens.verify(token)
        assert claims.session_id is not None
        key = session_key(claims.kind, claims.session_id)
        if self._revoked.get(key):
            raise _revoked()
        subject = await self._subject(claims, key)
        principal = Principal(
            tenant_id=claims.tenant_id,
            user_id=claims.subject,
            roles=subject.roles,
            scopes=claims.scopes if subject.scopes is None else claims.scopes or subject.scopes,
            token_id=claims.jti,
        )
        ttl = min(self._ttl, claims.expires_at - time.time())
        if ttl > 0:
            kid = str(unverified_header(token).get("kid"))
            entry = _Verified(principal, key, claims.expires_at, kid, subject)
            self._verified.set(token, entry, ttl_s=ttl)
        return principal

    @staticmethod
    def _issuer_of(token: str) -> str | None:
        try:
            iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return None
        return iss if isinstance(iss, str) else None

    async def _subject(self, claims: AccessClaims, key: str) -> _Subject:
        cached = self._subjects.get(key) if self._ttl > 0 else None
        if cached is not None:
            return cached
        assert claims.session_id is not None
        async with tenant_session(self._sessions, claims.tenant_id) as session:
            if claims.kind == SERVICE:
                account = await repo.get_service_account(
                    session, tenant_id=claims.tenant_id, account_id=claims.session_id
                )
                if account is None or account.revoked_at is not None:
                    raise Unauthenticated(
                        "The service account of this token was deleted.", code="token_revoked"
                    )
                subject = _Subject(frozenset({Role(account.role)}), frozenset(account.scopes))
            else:
                state = await repo.session_state(
                    session, tenant_id=claims.tenant_id, session_id=claims.session_id
                )
                if state is None or state[1].id != claims.subject:
                    raise Unauthenticated(
                        "The session of this access token does not exist.", code="token_revoked"
                    )
                login, user, role = state
                if login.revoked_at is not None:
                    raise _revoked()
                if user.status != "active":
                    raise Unauthenticated(
                        f"The user of this access token is {user.status}.",
                        code=_STATUS_CODES.get(user.status, "user_disabled"),
                    )
                if role is None:
                    raise Unauthenticated(
                        "The user of this access token is no longer a member of its tenant.",
                        code="not_a_member",
                    )
                subject = _Subject(frozenset({Role(role)}), None)
        if self._ttl > 0:
            self._subjects.set(key, subject, ttl_s=self._ttl)
        return subject


def _revoked() -> Unauthenticated:
    return Unauthenticated(
        "This access token's session was revoked (logout, or a refresh token used twice).",
        code="token_revoked",
    )
