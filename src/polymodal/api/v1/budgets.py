"""Budgets and rate limits: `GET/PUT/DELETE /v1/budgets` (the tenant's monthly budget),
`/v1/keys/{key_id}/budget` (one key's), `GET/PUT /v1/limits` and
`/v1/keys/{key_id}/limits` (requests and tokens per minute within the plan)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.api.state import AppState
from polymodal.domain.principal import Principal
from polymodal.tenancy import economics_admin as service
from polymodal.tenancy.economics import duration

router = APIRouter(prefix="/v1", tags=["budgets and limits"])
KeyId = Annotated[uuid.UUID, Path(description="The API key's id (GET /v1/keys lists them).")]


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    monthly_limit_usd: Decimal = Field(
        ge=0, le=Decimal(1_000_000_000), description="Budget per calendar month (UTC), in USD."
    )
    mode: Literal["hard", "soft"] = Field(
        default="hard",
        description="`hard`: a call that could exceed the budget gets 402. `soft`: calls "
        "proceed and alerts are recorded.",
    )
    alert_thresholds: list[float] | None = Field(
        default=None,
        max_length=service.MAX_THRESHOLDS,
        description="Fractions of the budget at which an alert is recorded once a month "
        "(default: the server's, 0.8 and 1.0).",
    )

    @field_validator("alert_thresholds")
    @classmethod
    def _thresholds(cls, v: list[float] | None) -> list[float] | None:
        # Whole percents from 1% to 200%: the metric's threshold label stays bounded.
        for t in v or []:
            if not 0.01 <= t <= 2 or round(t * 100) != t * 100:
                raise ValueError(f"{t} is not a whole percent between 0.01 and 2")
        return v


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(
        default=None, max_length=32, description="Must name the tenant's current plan."
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=service.MAX_RATE,
        description="Override of the plan's default; null restores it.",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=service.MAX_RATE,
        description="Override of the plan's default; null restores it.",
    )


class KeyLimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1, le=service.MAX_RATE)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=service.MAX_RATE)


def _budget(view: service.BudgetView) -> JSONResponse:
    def money(v: Decimal | None) -> str | None:
        return None if v is None else str(v.quantize(Decimal("0.000001")))

    return JSONResponse(
        {
            "object": "budget",
            "subject": view.subject,
            "month": view.month,
            "monthly_limit_usd": money(view.monthly_limit_usd),
            "mode": view.mode,
            "alert_thresholds": list(view.alert_thresholds),
            "spent_usd": money(view.spent_usd),
            "reserved_usd": money(view.reserved_usd),
            "remaining_usd": money(view.remaining_usd),
            "alerts": [
                {"threshold": a.threshold, "spent_usd": money(a.spent_usd), "at": a.at.isoformat()}
                for a in view.alerts
            ],
        }
    )


def _limits(view: service.LimitsView) -> JSONResponse:
    current = None
    if view.current is not None:
        current = {
            name: {"limit": q.limit, "remaining": q.remaining, "reset": duration(q.reset_s)}
            for name, q in (("requests", view.current.requests), ("tokens", view.current.tokens))
        }
    return JSONResponse(
        {
            "object": "rate_limits",
            "plan": view.plan,
            "plan_defaults": {
                "requests_per_minute": view.plan_rpm,
                "tokens_per_minute": view.plan_tpm,
            },
            "overrides": {
                "requests_per_minute": view.override_rpm,
                "tokens_per_minute": view.override_tpm,
            },
            "effective": {"requests_per_minute": view.rpm, "tokens_per_minute": view.tpm},
            "current": current,
        }
    )


@router.get("/budgets")
async def get_budget(principal: CurrentPrincipal, state: State) -> JSONResponse:
    """The tenant's monthly budget with this month's spend, reservations and alerts."""
    return _budget(await service.budget_view(state.economics, principal=principal, key_id=None))


async def _set_budget(
    state: AppState, principal: Principal, key_id: uuid.UUID | None, body: BudgetIn
) -> JSONResponse:
    view = await service.set_budget(
        state.economics,
        principal=principal,
        key_id=key_id,
        monthly_limit_usd=body.monthly_limit_usd,
        mode=body.mode,
        alert_thresholds=body.alert_thresholds,
    )
    return _budget(view)


@router.put("/budgets")
async def put_budget(body: BudgetIn, principal: CurrentPrincipal, state: State) -> JSONResponse:
    """Set the tenant's monthly budget (`budgets:write`)."""
    return await _set_budget(state, principal, None, body)


@router.delete("/budgets", status_code=204)
async def delete_budget(principal: CurrentPrincipal, state: State) -> Response:
    await service.delete_budget(state.economics, principal=principal, key_id=None)
    return Response(status_code=204)


@router.get("/keys/{key_id}/budget")
async def get_key_budget(key_id: KeyId, principal: CurrentPrincipal, state: State) -> JSONResponse:
    return _budget(await service.budget_view(state.economics, principal=principal, key_id=key_id))


@router.put("/keys/{key_id}/budget")
async def put_key_budget(
    key_id: KeyId, body: BudgetIn, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    return await _set_budget(state, principal, key_id, body)


@router.delete("/keys/{key_id}/budget", status_code=204)
async def delete_key_budget(key_id: KeyId, principal: CurrentPrincipal, state: State) -> Response:
    await service.delete_budget(state.economics, principal=principal, key_id=key_id)
    return Response(status_code=204)


@router.get("/limits")
async def get_limits(principal: CurrentPrincipal, state: State) -> JSONResponse:
    """The tenant's plan, its defaults, overrides and the caller's buckets right now."""
    return _limits(await service.limits_view(state.economics, principal=principal))


async def _set_limits(
    state: AppState,
    principal: Principal,
    key_id: uuid.UUID | None,
    plan: str | None,
    body: LimitsIn | KeyLimitsIn,
) -> JSONResponse:
    view = await service.set_limits(
        state.economics,
        principal=principal,
        key_id=key_id,
        plan=plan,
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
    )
    return _limits(view)


@router.put("/limits")
async def put_limits(body: LimitsIn, principal: CurrentPrincipal, state: State) -> JSONResponse:
    """Narrow the tenant's limits within its plan (`limits:write`)."""
    return await _set_limits(state, principal, None, body.plan, body)


@router.get("/keys/{key_id}/limits")
async def get_key_limits(key_id: KeyId, principal: CurrentPrincipal, state: State) -> JSONResponse:
    return _limits(await service.limits_view(state.economics, principal=principal, key_id=key_id))


@router.put("/keys/{key_id}/limits")
async def put_key_limits(
    key_id: KeyId, body: KeyLimitsIn, principal: CurrentPrincipal, state: State
) -> JSONResponse:
    return await _set_limits(state, principal, key_id, None, body)
