"""Usage and cost reports: `GET /v1/usage/costs` (JSON or streamed CSV), `/v1/usage/events`
(the raw ledger as streamed CSV), `/v1/usage/active-users`, `/v1/usage/concentration`.
Thin: the service checks the `usage:read` permission and does the arithmetic."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.api.responses import JSONResponse
from polymodal.tenancy import reports

router = APIRouter(prefix="/v1/usage", tags=["usage"])

GroupBy = Literal["feature", "deployment", "day", "user"]
_DATE = "A date (YYYY-MM-DD, UTC) or an ISO datetime."


def _money(value: Decimal) -> str:
    """Money leaves as a decimal string: exact, never a float, never exponent notation
    (a zero sum of NUMERIC(20, 10) values is ``0E-10`` to ``str``)."""
    return format(value, "f")


# Both bodies are documented, so clients (and schemathesis) know the CSV is intended.
CSV_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
        }
    }
}


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in request.headers.get("accept", "")


@router.get("/costs", response_model=None, responses=CSV_OR_JSON)
async def costs(
    request: Request,
    principal: CurrentPrincipal,
    state: State,
    group_by: Annotated[GroupBy, Query(description="How to split the cost.")] = "feature",
    from_: Annotated[str | None, Query(alias="from", max_length=40, description=_DATE)] = None,
    to: Annotated[
        str | None, Query(max_length=40, description=_DATE + " A date includes that day.")
    ] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> JSONResponse | StreamingResponse:
    """Requests, tokens and cost split by feature, deployment, UTC day or user
    (default: the last 30 days). `format=csv` or `Accept: text/csv` streams CSV."""
    span = reports.period(from_, to)
    service = reports.UsageReports(state.sessions)
    if _wants_csv(request, format):
        lines = await service.export_costs(principal, group_by=group_by, span=span)
        name = f"costs-by-{group_by}-{span.start:%Y%m%d}-{span.end:%Y%m%d}.csv"
        return StreamingResponse(
            iter(lines),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    report = await service.costs(principal, group_by=group_by, span=span)
    return JSONResponse(
        {
            "object": "usage.costs",
            "group_by": group_by,
            "from": span.start.isoformat(),
            "to": span.end.isoformat(),
            "currency": "USD",
            "total_cost": _money(report.total_cost),
            "total_requests": report.total_requests,
            "data": [
                {
                    "key": r.key,
                    "requests": r.requests,
                    "tokens_in": r.tokens_in,
                    "tokens_out": r.tokens_out,
                    "cost": _money(r.cost),
                }
                for r in report.rows
            ],
        }
    )


@router.get(
    "/events",
    response_model=None,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    response_class=StreamingResponse,
)
async def events(
    principal: CurrentPrincipal,
    state: State,
    from_: Annotated[str | None, Query(alias="from", max_length=40, description=_DATE)] = None,
    to: Annotated[
        str | None, Query(max_length=40, description=_DATE + " A date includes that day.")
    ] = None,
) -> StreamingResponse:
    """Every ledger row of the period (default: the last 30 days) as streamed CSV, oldest
    first: one line per model call with its user, key, feature, deployment, tokens, cost
    and timings. Audited as an export."""
    span = reports.period(from_, to)
    lines = await reports.UsageReports(state.sessions).export_events(principal, span=span)
    name = f"usage-events-{span.start:%Y%m%d}-{span.end:%Y%m%d}.csv"
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/active-users")
async def active_users(
    principal: CurrentPrincipal,
    state: State,
    month: Annotated[str | None, Query(max_length=7, description="YYYY-MM (UTC).")] = None,
) -> JSONResponse:
    """Users with at least one model call in the month, and the month's cost per such
    user (all of the tenant's cost divided by its active users)."""
    result = await reports.UsageReports(state.sessions).active_users(principal, month_label=month)
    return JSONResponse(
        {
            "object": "usage.active_users",
            "month": result.month,
            "currency": "USD",
            "active_users": result.active_users,
            "total_cost": _money(result.total_cost),
            "cost_per_active_user": _money(result.cost_per_active_user),
            "data": [
                {"user_id": u.user_id or None, "requests": u.requests, "cost": _money(u.cost)}
                for u in result.users
            ],
        }
    )


@router.get("/concentration")
async def concentration(
    principal: CurrentPrincipal,
    state: State,
    top_percent: Annotated[Decimal, Query(gt=0, le=100, description="N in 'top N%'.")] = Decimal(
        10
    ),
    month: Annotated[str | None, Query(max_length=7, description="YYYY-MM (UTC).")] = None,
) -> JSONResponse:
    """The share of the month's cost that comes from the top N% of users by cost."""
    result = await reports.UsageReports(state.sessions).concentration(
        principal, month_label=month, top_percent=top_percent
    )
    return JSONResponse(
        {
            "object": "usage.concentration",
            "month": result.month,
            "currency": "USD",
            "top_percent": str(result.top_percent),
            "users": result.users,
            "top_users": result.top_users,
            "total_cost": _money(result.total_cost),
            "top_cost": _money(result.top_cost),
            "share": str(result.share),
        }
    )
