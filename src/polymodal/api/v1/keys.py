"""`/v1/keys` (API keys) and `/v1/service-accounts` (client-credentials identities).
A secret is in the creating answer only. Write bodies forbid unknown fields, so
``tenant_id``, ``role`` (on a key), ``owner_id`` or quota fields get 422, never applied.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.db.models import ApiKey
from polymodal.db.models_identity import ServiceAccount

router = APIRouter(prefix="/v1", tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=100)
    scopes: list[str] = Field(default_factory=list, max_length=50)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ServiceAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: str = Field(min_length=1, max_length=16)
    scopes: list[str] = Field(default_factory=list, max_length=50)


def _key(k: ApiKey) -> dict[str, Any]:
    return {
        "id": str(k.id),
        "name": k.name,
        "prefix": f"pm_{k.prefix}",
        "user_id": str(k.user_id),
        "scopes": list(k.scopes),
        "created_at": k.created_at.isoformat(),
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


def _account(a: ServiceAccount) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "name": a.name,
        "client_id": a.client_id,
        "role": a.role,
        "scopes": list(a.scopes),
        "created_at": a.created_at.isoformat(),
        "revoked_at": a.revoked_at.isoformat() if a.revoked_at else None,
    }


@router.get("/keys")
async def list_keys(principal: CurrentPrincipal, state: State) -> JSONResponse:
    keys = await state.identity.credentials.list_keys(principal)
    return JSONResponse({"object": "list", "data": [_key(k) for k in keys]})


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, principal: CurrentPrincipal, state: State) -> JSONResponse:
    """A new API key of the caller; `key` is shown in this answer only."""
    key, secret = await state.identity.credentials.create_key(
        principal, name=body.name, scopes=body.scopes, expires_in_days=body.expires_in_days
    )
    return JSONResponse({**_key(key), "key": secret.secret}, status_code=201)


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: uuid.UUID, principal: CurrentPrincipal, state: State) -> Response:
    await state.identity.credentials.revoke_key(principal, key_id)
    return Response(status_code=204)


@router.get("/service-accounts")
async def list_service_accounts(principal: CurrentPrincipal, state: State) -> JSONResponse:
    accounts = await state.identity.credentials.list_service_accounts(principal)
    return JSONResponse({"object": "list", "data": [_account(a) for a in accounts]})


@router.post("/service-accounts", status_code=201)
async def create_service_account(
    body: ServiceAccountCreate, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    """A service account for `grant_type=client_credentials`; `client_secret` once."""
    account, secret = await state.identity.credentials.create_service_account(
        principal, name=body.name, role=body.role, scopes=body.scopes
    )
    return JSONResponse({**_account(account), "client_secret": secret.secret}, status_code=201)


@router.delete("/service-accounts/{account_id}", status_code=204)
async def delete_service_account(
    account_id: uuid.UUID, principal: CurrentPrincipal, state: State
) -> Response:
    await state.identity.credentials.delete_service_account(principal, account_id)
    return Response(status_code=204)
