"""Resolve ``Authorization: Bearer <api key>`` to a `Principal`, without a database
round-trip on the hot path: a resolved key is cached per process for
``auth_cache_ttl_s`` seconds, which is also the bound on how long a revoked key lives on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.memory import TTLCache
from polymodal.db import repositories, system
from polymodal.db.models import User
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.errors import Unauthenticated
from polymodal.domain.principal import Principal, Role
from polymodal.tenancy.keys import parse_key, secret_matches


@dataclass(frozen=True, slots=True)
class _CachedKey:
    secret_hash: str
    principal: Principal
    expires_at: datetime | None
    revoked: bool
    owner_status: str = "active"  # the key's user: active | disabled | locked | deleted


class KeyAuthenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = cache_ttl_s
        self._cache: TTLCache[_CachedKey] = TTLCache(max_entries=max_entries, clock=clock)
        self._loading: dict[str, asyncio.Future[_CachedKey | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "Malformed Authorization header: expected 'Bearer <key>'.",
                code="malformed_authorization",
            )
        parts = parse_key(token.strip())
        if parts is None:
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        entry = self._cache.get(parts.prefix) if self._ttl > 0 else None
        if entry is None:
            entry = await self._load_once(parts.prefix)
            if entry is None:
                raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        if not secret_matches(parts.secret, entry.secret_hash):
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        if entry.revoked:
            raise Unauthenticated("This API key has been revoked.", code="revoked_api_key")
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            raise Unauthenticated("This API key has expired.", code="expired_api_key")
        if entry.owner_status != "active":
            raise Unauthenticated(
                f"The user of this API key is {entry.owner_status}.",
                code=f"user_{entry.owner_status}",
            )
        return entry.principal

    def forget(self, prefix: str) -> None:
        """Drop a cached key at once (this process only; others wait out the TTL)."""
        self._cache.pop(prefix)

    def clear(self) -> None:
        """Drop every cached key (an operator changed a user's status)."""
        self._cache.clear()

    async def _load_once(self, prefix: str) -> _CachedKey | None:
        """One database lookup per key at a time: when a busy key's cache entry expires,
        the requests that arrive meanwhile wait for that lookup instead of each making
        their own (64 concurrent callers were 64 queries every TTL)."""
        pending = self._loading.get(prefix)
        if pending is None:
            pending = asyncio.ensure_future(self._load(prefix))
            self._loading[prefix] = pending
            try:
                entry = await asyncio.shield(pending)
            finally:
                if pending.done():
                    self._loading.pop(prefix, None)
                else:  # we were cancelled; the lookup finishes for the others
                    pending.add_done_callback(lambda _: self._loading.pop(prefix, None))
            if entry is not None and self._ttl > 0:
                self._cache.set(prefix, entry, ttl_s=self._ttl)
            return entry
        return await asyncio.shield(pending)

    async def _load(self, prefix: str) -> _CachedKey | None:
        # The prefix names the tenant, so this one lookup precedes it (a system session).
        async with system_session(self._sessions) as session:
            key = await system.find_key_by_prefix(session, prefix=prefix)
        if key is None:
            return None
        async with tenant_session(self._sessions, key.tenant_id) as session:
            roles = await repositories.roles_of(
                session, tenant_id=key.tenant_id, user_id=key.user_id
            )
            owner = await session.get(User, key.user_id)
        principal = Principal(
            tenant_id=key.tenant_id,
            user_id=key.user_id,
            key_id=key.id,
            roles=frozenset(Role(r) for r in roles),
            scopes=frozenset(key.scopes),
        )
        return _CachedKey(
            secret_hash=key.secret_hash,
            principal=principal,
            expires_at=key.expires_at,
            revoked=key.revoked_at is not None,
            owner_status=owner.status if owner is not None else "deleted",
        )


def principal_id(principal: Principal) -> str:
    """What the audit log calls the actor."""
    return f"key:{principal.key_id}" if principal.key_id else f"user:{principal.user_id}"
