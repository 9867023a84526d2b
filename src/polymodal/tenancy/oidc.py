"""Tokens of an external OpenID Connect issuer (Auth0, Keycloak, Entra ID, ...).

Verified against the issuer's JWKS (fetched over HTTP, cached ``jwks_ttl_s``, fetched
again at most every 10 s when a token names an unknown ``kid``), with the algorithm
pinned to the key's own and only asymmetric algorithms allowed. Claims map to a
polymodal principal: ``oidc_tenant_claim`` names the tenant (id or name), and
``oidc_role_claim`` the role. External tokens never carry the owner role (it maps to
admin): ownership is granted inside polymodal only.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.memory import TTLCache
from polymodal.db import system
from polymodal.db.scope import system_session
from polymodal.domain.errors import Unauthenticated
from polymodal.domain.principal import Principal, Role
from polymodal.tenancy.rbac import unknown_scopes
from polymodal.tenancy.tokens import decode_errors, unverified_header

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"})
_REFETCH_S = 10.0


class ExternalIssuer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        issuer: str,
        jwks_url: str | None,
        audience: str | None,
        tenant_claim: str,
        role_claim: str,
        default_role: str,
        jwks_ttl_s: float,
        leeway_s: float,
        timeout_s: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self._sessions = sessions
        self._jwks_url = jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json"
        self._audience = audience
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._default_role = Role(default_role)
        self._ttl = jwks_ttl_s
        self._leeway = leeway_s
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._tenants: TTLCache[uuid.UUID] = TTLCache(max_entries=10_000)

    async def close(self) -> None:
        await self._http.aclose()

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as e:
            raise Unauthenticated(
                "The external issuer's keys (JWKS) cannot be fetched.", code="issuer_unavailable"
            ) from e
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        age = time.monotonic() - self._fetched_at
        if age >= self._ttl or (kid not in self._keys and age >= _REFETCH_S):
            await self._fetch()
        return self._keys.get(kid)

    async def verify(self, token: str) -> Principal:
        header = unverified_header(token)
        kid = header.get("kid")
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise Unauthenticated(
                "The access token's algorithm is not allowed.", code="invalid_algorithm"
            )
        key = await self._key(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated(
                "The external token's signing key (kid) is unknown.", code="unknown_key"
            )
        if key.algorithm_name != alg:
            raise Unauthenticated(
                "The access token's algorithm is not allowed.", code="invalid_algorithm"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as e:
            raise decode_errors(e) from e
        return await self._principal(claims)

    async def _principal(self, claims: dict[str, Any]) -> Principal:
        ref = claims.get(self._tenant_claim)
        if not isinstance(ref, str) or not ref:
            raise Unauthenticated(
                f"The external token has no {self._tenant_claim!r} claim naming a tenant.",
                code="invalid_token",
            )
        tenant_id = self._tenants.get(ref)
        if tenant_id is None:
            async with system_session(self._sessions) as session:  # names its tenant
                tenant = await system.find_tenant(session, ref=ref)
            if tenant is None or tenant.status != "active":
                raise Unauthenticated(
                    f"The external token names tenant {ref!r}, which does not exist.",
                    code="unknown_tenant",
                )
            tenant_id = tenant.id
            self._tenants.set(ref, tenant_id, ttl_s=self._ttl)
        raw_role = claims.get(self._role_claim)
        if raw_role is None:
            role = self._default_role
        else:
            try:
                role = Role(str(raw_role))
            except ValueError as e:
                raise Unauthenticated(
                    f"The external token's {self._role_claim!r} claim is not a role "
                    f"({', '.join(r.value for r in Role)}).",
                    code="invalid_token",
                ) from e
        if role is Role.OWNER:
            role = Role.ADMIN
        subject = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer}|{claims['sub']}")
        # Only scopes that name polymodal permissions narrow the role; an IdP's own
        # ("openid profile email") do not.
        scope = claims.get("scope")
        names = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        return Principal(
            tenant_id=tenant_id,
            user_id=subject,
            roles=frozenset({role}),
            scopes=names - frozenset(unknown_scopes(names)),
            token_id=str(claims.get("jti") or ""),
        )
