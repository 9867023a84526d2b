"""`GET /v1/audit`: the tenant's audit log, newest first, paged by `seq`
(needs the `audit:read` permission, checked in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.tenancy import audit

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit")
async def audit_log(
    principal: CurrentPrincipal,
    state: State,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**63 - 1, description="Only events older than this seq (paging)."),
    ] = None,
) -> JSONResponse:
    page = await audit.list_events(state.sessions, principal, before=before, limit=limit)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "seq": e.seq,
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "data": e.data,
                    "created_at": e.created_at.isoformat(),
                    "hash": e.hash,
                }
                for e in page.events
            ],
            "next_before": page.next_before,
            "has_more": page.next_before is not None,
        }
    )
