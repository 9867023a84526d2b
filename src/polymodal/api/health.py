"""Liveness, readiness and metrics: public endpoints, no authentication."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from polymodal.api.deps import State
from polymodal.api.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


async def _check(check: Awaitable[Any], limit_s: float) -> str:
    try:
        async with asyncio.timeout(limit_s):
            await check
    except TimeoutError:
        return f"error: no answer within {limit_s:g}s"
    except Exception as e:  # any failure of the dependency means "not ready"
        return f"error: {type(e).__name__}"
    return "ok"


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable."}})
async def readyz(state: State) -> JSONResponse:
    """Ready when the database and, when configured, Redis answer."""

    async def database() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    timeout = state.settings.readiness_timeout_s
    checks = {"database": await _check(database(), timeout)}
    if state.settings.redis_url:
        checks["redis"] = await _check(state.cache.ping(), timeout)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
