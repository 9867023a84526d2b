"""Builds the identity stack (key ring, tokens, authenticator, grant/member/credential
services) from settings, for the app factory and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.observability.logging import get_logger
from polymodal.settings import Settings
from polymodal.tenancy.auth import KeyAuthenticator
from polymodal.tenancy.authn import Authenticator
from polymodal.tenancy.credentials import CredentialService
from polymodal.tenancy.identity import IdentityService
from polymodal.tenancy.members import MemberService
from polymodal.tenancy.oidc import ExternalIssuer
from polymodal.tenancy.signing import KeyRing
from polymodal.tenancy.tokens import TokenService


@dataclass
class Identity:
    ring: KeyRing
    tokens: TokenService
    authenticator: Authenticator
    grants: IdentityService
    members: MemberService
    credentials: CredentialService
    external: ExternalIssuer | None

    async def start(self) -> None:
        """Make sure a signing key exists and is not past its rotation age. A database
        that is down or not migrated yet must not stop start-up (``/readyz`` reports it):
        the ring then loads on first use."""
        try:
            await self.ring.ensure()
        except (SQLAlchemyError, OSError) as e:
            get_logger("polymodal.identity").warning(
                "signing_keys_unavailable", error=type(e).__name__
            )

    async def close(self) -> None:
        if self.external is not None:
            await self.external.close()


def key_ring(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> KeyRing:
    return KeyRing(
        sessions,
        secret=settings.secret_key.get_secret_value(),
        algorithm=settings.jwt_algorithm,
        rotation_s=settings.jwt_rotation_s,
        # A rotated-out key verifies until every token it signed has expired.
        overlap_s=settings.jwt_access_ttl_s + settings.jwt_leeway_s,
        unknown_kid_reload_s=settings.jwt_unknown_kid_reload_s,
    )


def build_identity(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], cache: Cache
) -> Identity:
    ring = key_ring(settings, sessions)
    tokens = TokenService(
        ring,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_s=settings.jwt_access_ttl_s,
        leeway_s=settings.jwt_leeway_s,
    )
    external = None
    if settings.oidc_issuer:
        external = ExternalIssuer(
            sessions,
            issuer=settings.oidc_issuer,
            jwks_url=settings.oidc_jwks_url,
            audience=settings.oidc_audience,
            tenant_claim=settings.oidc_tenant_claim,
            role_claim=settings.oidc_role_claim,
            default_role=settings.oidc_default_role,
            jwks_ttl_s=settings.oidc_jwks_ttl_s,
            leeway_s=settings.jwt_leeway_s,
        )
    authenticator = Authenticator(
        sessions,
        keys=KeyAuthenticator(sessions, cache_ttl_s=settings.auth_cache_ttl_s),
        tokens=tokens,
        external=external,
        cache_ttl_s=settings.auth_cache_ttl_s,
    )
    return Identity(
        ring=ring,
        tokens=tokens,
        authenticator=authenticator,
        grants=IdentityService(
            sessions,
            tokens=tokens,
            authenticator=authenticator,
            cache=cache,
            refresh_ttl_s=settings.jwt_refresh_ttl_s,
            max_failures=settings.login_max_failures,
            failure_window_s=settings.login_failure_window_s,
        ),
        members=MemberService(
            sessions, authenticator=authenticator, invitation_ttl_s=settings.invitation_ttl_s
        ),
        credentials=CredentialService(sessions, authenticator=authenticator),
        external=external,
    )
