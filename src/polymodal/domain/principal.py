"""Who is calling: resolved once per request by authentication, read by services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Tenant roles, most powerful first (DESIGN.md section 8)."""

    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    MEMBER = "member"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller inside one tenant.

    ``key_id`` is set for API-key callers; token callers (JWT) leave it ``None`` and carry
    the token's ``token_id`` (its ``jti``). For a service account ``user_id`` is the
    service account's id; for an external OIDC caller it is derived from the issuer and
    ``sub``. ``scopes`` empty means "all the roles allow".
    """

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    roles: frozenset[Role]
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: uuid.UUID | None = None
    token_id: str | None = None
