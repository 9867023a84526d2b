"""Access tokens: short-lived JWTs signed by the key ring, and their verification.

Claims: ``iss``, ``aud``, ``sub`` (user or service account id), ``tid`` (tenant id),
``roles``, ``scope`` (space-separated, optional), ``sid`` (login session or service
account, for revocation), ``kind`` (``user`` | ``service``), ``jti``, ``iat``, ``exp``.
Verification pins the algorithm to the one of the key named by ``kid``: ``alg: none``,
an HMAC token signed with the public key (HS/RS confusion), an unknown or retired
``kid``, a wrong ``aud``/``iss`` or an expired token are all refused with a 401 that
says which.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from polymodal.domain.errors import Unauthenticated
from polymodal.tenancy.signing import KeyRing

USER = "user"
SERVICE = "service"
EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    tenant_id: uuid.UUID
    subject: uuid.UUID
    kind: str
    session_id: uuid.UUID | None
    roles: tuple[str, ...]
    scopes: frozenset[str]
    jti: str
    expires_at: float


def _bad(message: str, code: str) -> Unauthenticated:
    return Unauthenticated(message, code=code)


def decode_errors(e: jwt.PyJWTError) -> Unauthenticated:
    """One PyJWT failure -> a 401 naming what was wrong."""
    if isinstance(e, jwt.ExpiredSignatureError):
        return _bad("The access token has expired; get a new one.", "token_expired")
    if isinstance(e, jwt.InvalidAudienceError):
        return _bad("The access token is for another audience (aud).", "invalid_audience")
    if isinstance(e, jwt.InvalidIssuerError):
        return _bad("The access token is from another issuer (iss).", "invalid_issuer")
    if isinstance(e, jwt.InvalidSignatureError):
        return _bad("The access token's signature does not verify.", "invalid_signature")
    if isinstance(e, jwt.InvalidAlgorithmError):
        return _bad("The access token's algorithm is not allowed.", "invalid_algorithm")
    if isinstance(e, jwt.MissingRequiredClaimError):
        return _bad(f"The access token lacks the {e.claim!r} claim.", "invalid_token")
    if isinstance(e, jwt.ImmatureSignatureError):
        return _bad("The access token is not valid yet.", "invalid_token")
    return _bad("The access token is malformed.", "invalid_token")


def unverified_header(token: str) -> dict[str, Any]:
    try:
        return dict(jwt.get_unverified_header(token))
    except jwt.PyJWTError as e:
        raise _bad("The access token is malformed.", "invalid_token") from e


class TokenService:
    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        leeway_s: float,
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.access_ttl_s = access_ttl_s
        self._leeway = leeway_s

    async def issue(
        self,
        *,
        tenant_id: uuid.UUID,
        subject: uuid.UUID,
        kind: str,
        session_id: uuid.UUID,
        roles: list[str],
        scopes: list[str],
    ) -> str:
        key = await self.ring.signing_key()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(subject),
            "tid": str(tenant_id),
            "sid": str(session_id),
            "kind": kind,
            "roles": sorted(roles),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + self.access_ttl_s,
        }
        if scopes:
            claims["scope"] = " ".join(sorted(scopes))
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})

    async def verify(self, token: str) -> AccessClaims:
        header = unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _bad("The access token names no signing key (kid).", "invalid_token")
        key = await self.ring.verification_key(kid)
        if key is None:
            raise _bad(f"The signing key {kid!r} is unknown or retired.", "unknown_key")
        if header.get("alg") != key.alg:
            raise _bad("The access token's algorithm is not allowed.", "invalid_algorithm")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "tid", "sid", "jti"]},
            )
        except jwt.PyJWTError as e:
            raise decode_errors(e) from e
        return parse_claims(claims)


def parse_claims(claims: dict[str, Any]) -> AccessClaims:
    try:
        kind = str(claims.get("kind", USER))
        if kind not in (USER, SERVICE):
            raise ValueError(kind)
        roles = claims.get("roles") or []
        if not isinstance(roles, list):
            raise ValueError("roles")
        scope = claims.get("scope") or ""
        return AccessClaims(
            tenant_id=uuid.UUID(str(claims["tid"])),
            subject=uuid.UUID(str(claims["sub"])),
            kind=kind,
            session_id=uuid.UUID(str(claims["sid"])),
            roles=tuple(str(r) for r in roles),
            scopes=frozenset(str(scope).split()),
            jti=str(claims["jti"]),
            expires_at=float(claims["exp"]),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise _bad("The access token's claims are malformed.", "invalid_token") from e
