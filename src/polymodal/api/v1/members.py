"""`/v1/members`: list members and pending invitations, invite by email with a role,
change a member's role, remove a member. Who may do which is decided in
tenancy/members.py from the permission table.

Write bodies forbid unknown fields (422 naming the field): ``tenant_id``, ``owner_id``,
quota fields and the like are never taken from a body.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.tenancy.members import InvitationView, MemberView

router = APIRouter(prefix="/v1/members", tags=["members"])


class MemberInvite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254)
    role: str = Field(min_length=1, max_length=16)


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1, max_length=16)


def _member(m: MemberView) -> dict[str, Any]:
    return {
        "user_id": str(m.user_id),
        "email": m.email,
        "display_name": m.display_name,
        "role": m.role,
        "status": m.status,
        "joined_at": m.joined_at.isoformat(),
    }


def _invitation(i: InvitationView) -> dict[str, Any]:
    body = {
        "id": str(i.id),
        "email": i.email,
        "role": i.role,
        "expires_at": i.expires_at.isoformat(),
    }
    if i.token:
        body["token"] = i.token
    return body


@router.get("")
async def list_members(principal: CurrentPrincipal, state: State) -> JSONResponse:
    members, invitations = await state.identity.members.list_members(principal)
    return JSONResponse(
        {
            "object": "list",
            "data": [_member(m) for m in members],
            "invitations": [_invitation(i) for i in invitations],
        }
    )


@router.post("", status_code=201)
async def invite_member(
    body: MemberInvite, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    """Invite someone by email; the answer carries the invitation token once."""
    invitation = await state.identity.members.invite(principal, email=body.email, role=body.role)
    return JSONResponse(_invitation(invitation), status_code=201)


@router.patch("/{user_id}")
async def update_member(
    user_id: uuid.UUID, body: MemberUpdate, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    member = await state.identity.members.change_role(principal, user_id, role=body.role)
    return JSONResponse(_member(member))


@router.delete("/{user_id}", status_code=204)
async def remove_member(user_id: uuid.UUID, principal: CurrentPrincipal, state: State) -> Response:
    await state.identity.members.remove(principal, user_id)
    return Response(status_code=204)
