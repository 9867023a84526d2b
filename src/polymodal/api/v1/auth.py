"""OAuth2 endpoints: `POST /v1/auth/token` (grants `password`, `client_credentials`,
`refresh_token`; form-encoded as RFC 6749 asks), `POST /v1/auth/revoke` (RFC 7009),
`POST /v1/auth/invitations/accept`, and the public `GET /.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from polymodal.api.deps import State
from polymodal.api.responses import JSONResponse
from polymodal.domain.errors import InvalidRequest, ValidationFailed
from polymodal.tenancy.identity import TokenGrant

router = APIRouter(tags=["identity"])
GRANT_TYPES = ("password", "client_credentials", "refresh_token")
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_FORM_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": list(GRANT_TYPES)},
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "tenant": {"type": "string", "description": "tenant name or id"},
                        "scope": {"type": "string"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                        "refresh_token": {"type": "string"},
                    },
                }
            }
        },
    }
}


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != _FORM:
        raise InvalidRequest(f"Send the body as {_FORM} (OAuth2).", code="unsupported_media_type")
    try:
        parsed = parse_qs((await request.body()).decode(), keep_blank_values=True)
    except UnicodeDecodeError as e:
        raise InvalidRequest("The form body is not UTF-8.", code="invalid_request") from e
    return {k: v[0] for k, v in parsed.items()}


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise ValidationFailed(f"{name}: required", param=name, code="missing_field")
    return value


def _basic(request: Request) -> tuple[str, str] | None:
    """Client credentials from HTTP Basic (RFC 6749 section 2.3.1)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return unquote(client_id), unquote(secret)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _grant_body(grant: TokenGrant) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": grant.access_token,
        "token_type": "Bearer",
        "expires_in": grant.expires_in,
        "tenant_id": str(grant.tenant_id),
    }
    if grant.scope:
        body["scope"] = grant.scope
    if grant.refresh_token:
        body["refresh_token"] = grant.refresh_token
    return body


@router.post("/v1/auth/token", openapi_extra=_FORM_OPENAPI)
async def token(request: Request, state: State) -> JSONResponse:
    """Get an access token (and, for `password`, a refresh token that rotates on use)."""
    form = await _form(request)
    grants = state.identity.grants
    grant_type = _field(form, "grant_type")
    scope = form.get("scope", "")
    if grant_type == "password":
        grant = await grants.password_grant(
            email=_field(form, "username"),
            password=_field(form, "password"),
            tenant=form.get("tenant") or None,
            scope=scope,
            client=_client(request),
        )
    elif grant_type == "client_credentials":
        basic = _basic(request)
        client_id, secret = basic or (_field(form, "client_id"), _field(form, "client_secret"))
        grant = await grants.client_credentials(
            client_id=client_id, client_secret=secret, scope=scope
        )
    elif grant_type == "refresh_token":
        grant = await grants.refresh(
            refresh_token=_field(form, "refresh_token"), client=_client(request)
        )
    else:
        raise InvalidRequest(
            f"grant_type: {grant_type!r} is not supported; use {', '.join(GRANT_TYPES)}.",
            code="unsupported_grant_type",
        )
    return JSONResponse(_grant_body(grant), headers=_NO_STORE)


@router.post("/v1/auth/revoke", openapi_extra=_FORM_OPENAPI)
async def revoke(request: Request, state: State) -> JSONResponse:
    """Revoke a refresh or access token and its session (200 even when unknown)."""
    form = await _form(request)
    await state.identity.grants.revoke(token=_field(form, "token"), client=_client(request))
    return JSONResponse({}, headers=_NO_STORE)


class InvitationAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str = Field(default="", max_length=200)


@router.post("/v1/auth/invitations/accept", status_code=201)
async def accept_invitation(body: InvitationAccept, state: State) -> JSONResponse:
    """Join the inviting tenant (creating the account, or proving it with its password)."""
    joined = await state.identity.grants.accept_invitation(
        token=body.token, password=body.password, display_name=body.display_name
    )
    return JSONResponse(
        {"tenant_id": str(joined.tenant_id), "user_id": str(joined.user_id), "role": joined.role},
        status_code=201,
    )


@router.get("/.well-known/jwks.json")
async def jwks(state: State) -> JSONResponse:
    """Public keys that verify polymodal's access tokens (current and previous)."""
    return JSONResponse(
        await state.identity.ring.jwks(), headers={"cache-control": "public, max-age=300"}
    )
