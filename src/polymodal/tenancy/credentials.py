"""API keys and service accounts managed through the API (the CLI's operator path is
tenancy/admin.py). Checked here from the permission table: ``keys:read`` to list,
``keys:write`` to create or revoke. A new credential never holds more than its creator:
its scopes must be ones the creator is granted, a service account's role may not be
above the creator's, and a caller without ``members:write`` revokes only its own keys.
The secret is returned once and only its hash is stored.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import identity as repo
from polymodal.db import repositories
from polymodal.db.models import ApiKey
from polymodal.db.models_identity import ServiceAccount
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from polymodal.domain.principal import Principal
from polymodal.tenancy.authn import Authenticator
from polymodal.tenancy.keys import hash_secret, new_key
from polymodal.tenancy.members import actor, parse_role
from polymodal.tenancy.rbac import (
    Permission,
    allows,
    granted,
    require,
    require_grant,
    scope_permissions,
    unknown_scopes,
)
from polymodal.tenancy.tokens import SERVICE

CLIENT_PREFIX = "pmc_"


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A credential just made: ``secret`` is shown this once."""

    id: uuid.UUID
    secret: str
    client_id: str = ""


def _checked_scopes(principal: Principal, scopes: list[str]) -> list[str]:
    """Validate requested scopes; none requested from a scoped caller means its own."""
    unknown = unknown_scopes(scopes)
    if unknown:
        raise ValidationFailed(
            f"scopes: unknown scope {unknown[0]!r}", param="scopes", code="invalid_scope"
        )
    mine = granted(principal)
    if not scopes:
        return sorted(p.value for p in mine) if principal.scopes else []
    beyond = scope_permissions(scopes) - mine
    if beyond:
        raise PermissionDenied(
            f"scopes: you cannot grant {sorted(beyond)[0].value!r}, which you do not hold",
            code="scope_above_own",
        )
    return sorted(set(scopes))


class CredentialService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        authenticator: Authenticator,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._auth = authenticator
        self._clock = clock

    # --- API keys ---------------------------------------------------------------------

    async def list_keys(self, principal: Principal) -> list[ApiKey]:
        require(principal, Permission.KEYS_READ)
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            return await repositories.list_api_keys(session, tenant_id=principal.tenant_id)

    async def create_key(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: list[str],
        expires_in_days: int | None,
    ) -> tuple[ApiKey, NewSecret]:
        require(principal, Permission.KEYS_WRITE)
        scopes = _checked_scopes(principal, scopes)
        tid = principal.tenant_id
        now = self._clock()
        full, parts = new_key()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            if await repo.get_membership(session, tenant_id=tid, user_id=principal.user_id) is None:
                raise PermissionDenied(
                    "API keys belong to members; a service account or external token "
                    "cannot own one.",
                    code="not_a_member",
                )
            try:
                key = await repositories.create_api_key(
                    session,
                    tenant_id=tid,
                    user_id=principal.user_id,
                    name=name,
                    prefix=parts.prefix,
                    secret_hash=hash_secret(parts.secret),
                    scopes=scopes,
                    expires_at=None
                    if expires_in_days is None
                    else now + timedelta(days=expires_in_days),
                )
            except IntegrityError as e:
                raise Conflict("key prefix collision, try again", code="key_collision") from e
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="key.create",
                target=str(key.id),
                data={"name": name, "scopes": scopes},
                at=now,
            )
        return key, NewSecret(key.id, full)

    async def revoke_key(self, principal: Principal, key_id: uuid.UUID) -> None:
        require(principal, Permission.KEYS_WRITE)
        tid = principal.tenant_id
        now = self._clock()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            key = await repositories.get_api_key(session, tenant_id=tid, key_id=key_id)
            if key is None or key.revoked_at is not None:
                raise NotFound(f"no live key {key_id} in this tenant", code="key_not_found")
            if key.user_id != principal.user_id and not allows(principal, Permission.MEMBERS_WRITE):
                raise PermissionDenied(
                    "you can revoke only your own keys (members:write revokes any)",
                    code="not_your_key",
                )
            await repositories.revoke_api_key(session, tenant_id=tid, key_id=key_id, at=now)
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="key.revoke",
                target=str(key_id),
                at=now,
            )
        self._auth.forget(key.prefix)

    # --- service accounts ----------------------------------------------------------------

    async def list_service_accounts(self, principal: Principal) -> list[ServiceAccount]:
        require(principal, Permission.KEYS_READ)
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            return await repo.list_service_accounts(session, tenant_id=principal.tenant_id)

    async def create_service_account(
        self, principal: Principal, *, name: str, role: str, scopes: list[str]
    ) -> tuple[ServiceAccount, NewSecret]:
        wanted = parse_role(role)
        require_grant(principal, wanted, to_manage=Permission.KEYS_WRITE)
        scopes = _checked_scopes(principal, scopes)
        tid = principal.tenant_id
        now = self._clock()
        client_id = CLIENT_PREFIX + secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        async with tenant_session(self._sessions, tid) as session, session.begin():
            account = await repo.create_service_account(
                session,
                tenant_id=tid,
                name=name,
                client_id=client_id,
                secret_hash=hash_secret(secret),
                role=wanted.value,
                scopes=scopes,
                created_by=principal.user_id,
                at=now,
            )
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="service_account.create",
                target=str(account.id),
                data={"name": name, "role": wanted.value, "scopes": scopes},
                at=now,
            )
        return account, NewSecret(account.id, secret, client_id)

    async def delete_service_account(self, principal: Principal, account_id: uuid.UUID) -> None:
        require(principal, Permission.KEYS_WRITE)
        tid = principal.tenant_id
        now = self._clock()
        async with tenant_session(self._sessions, tid) as session, session.begin():
            account = await repo.get_service_account(session, tenant_id=tid, account_id=account_id)
            if account is None or account.revoked_at is not None:
                raise NotFound(
                    f"no service account {account_id} in this tenant",
                    code="service_account_not_found",
                )
            require_grant(principal, parse_role(account.role), to_manage=Permission.KEYS_WRITE)
            account.revoked_at = now
            await repositories.append_audit(
                session,
                tenant_id=tid,
                actor=actor(principal),
                action="service_account.delete",
                target=str(account_id),
                at=now,
            )
        self._auth.forget_session(SERVICE, account_id)
