"""Usage ledger writes and the operator's cross-tenant report.

System-level module (like db/system.py): the writer inserts batches that mix tenants, and
the operator report groups by tenant. Tenant-scoped reports live in db/usage_reports.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.dialects import insert_ignoring, money_sum, money_value, utc_day
from polymodal.db.models import Tenant, UsageEvent


async def insert_usage(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Write a batch of usage rows (each names its own tenant). Rows whose ``event_id`` is
    already stored are skipped, so replaying a spool twice never counts a call twice."""
    if rows:
        await session.execute(insert_ignoring(session, UsageEvent), list(rows))


async def tenant_plans(session: AsyncSession, *, tenant_ids: Sequence[uuid.UUID]) -> dict[str, str]:
    """Plan by tenant id, for metric labels."""
    if not tenant_ids:
        return {}
    result = await session.execute(
        select(Tenant.id, Tenant.plan).where(Tenant.id.in_(list(tenant_ids)))
    )
    return {str(tid): plan for tid, plan in result.all()}


@dataclass(frozen=True, slots=True)
class TenantCost:
    tenant_id: uuid.UUID
    tenant: str
    plan: str
    group: str  # "" when grouped by tenant only
    requests: int
    tokens_in: int
    tokens_out: int
    cost: Decimal


OPERATOR_GROUPS = ("tenant", "feature", "deployment", "day")


async def cost_by_tenant(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    then_by: str = "tenant",
) -> list[TenantCost]:
    """Cost per tenant in ``[start, end)``, optionally split by feature, deployment or day.
    Operator-only: it reads every tenant's ledger."""
    if then_by not in OPERATOR_GROUPS:
        raise ValueError(f"then_by must be one of {OPERATOR_GROUPS}")
    group: Any
    if then_by == "feature":
        group = UsageEvent.feature
    elif then_by == "deployment":
        group = UsageEvent.deployment
    elif then_by == "day":
        group = utc_day(session, UsageEvent.created_at)
    else:
        group = None
    cost = money_sum(session, UsageEvent.cost)
    columns: list[Any] = [
        Tenant.id,
        Tenant.name,
        Tenant.plan,
        func.count(UsageEvent.id),
        func.coalesce(func.sum(UsageEvent.tokens_in), 0),
        func.coalesce(func.sum(UsageEvent.tokens_out), 0),
        cost,
    ]
    keys: list[Any] = [Tenant.id, Tenant.name, Tenant.plan]
    if group is not None:
        columns.insert(3, group)
        keys.append(group)
    stmt = (
        select(*columns)
        .join(Tenant, Tenant.id == UsageEvent.tenant_id)
        .where(UsageEvent.created_at >= start, UsageEvent.created_at < end)
        .group_by(*keys)
    )
    rows = []
    for row in (await session.execute(stmt)).all():
        values = list(row)
        label = str(values.pop(3)) if group is not None else ""
        tid, name, plan, requests, t_in, t_out, raw = values
        rows.append(
            TenantCost(
                tenant_id=tid,
                tenant=name,
                plan=plan,
                group=label,
                requests=int(requests),
                tokens_in=int(t_in),
                tokens_out=int(t_out),
                cost=money_value(session, raw),
            )
        )
    rows.sort(key=lambda r: (-r.cost, r.tenant, r.group))
    return rows
