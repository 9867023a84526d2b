"""`GET /v1/me`: who the presented credentials are."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from polymodal.api.deps import CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["identity"])


class PrincipalPublic(BaseModel):
    tenant_id: str
    user_id: str
    key_id: str | None
    roles: list[str]
    scopes: list[str]


@router.get("/me")
async def me(principal: CurrentPrincipal) -> PrincipalPublic:
    return PrincipalPublic(
        tenant_id=str(principal.tenant_id),
        user_id=str(principal.user_id),
        key_id=str(principal.key_id) if principal.key_id else None,
        roles=sorted(r.value for r in principal.roles),
        scopes=sorted(principal.scopes),
    )
