"""`GET /v1/routing/health`: each deployment's breaker, cooldown and recent latency."""

from __future__ import annotations

from fastapi import APIRouter

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse

router = APIRouter(prefix="/v1/routing", tags=["routing"])


@router.get("/health")
async def routing_health(principal: CurrentPrincipal, state: State) -> JSONResponse:
    """Breaker state (closed, open, half_open), cooldown and latency per deployment."""
    health = state.health
    data = [
        {**health.snapshot(d.id), "available": d.available, "provider": d.provider}
        for d in state.gateway.models()
        if d.is_chat or d.is_embedding
    ]
    return JSONResponse({"object": "list", "data": data})
