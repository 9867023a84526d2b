"""Data access for rate limits and budgets. ``tenant_id`` is a required keyword of every
function; callers open the session with ``db.scope.tenant_session`` (RLS on PostgreSQL).
Functions never commit: the calling service owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.dialects import insert_ignoring, money_sum, money_value
from polymodal.db.models import ApiKey, Tenant, UsageEvent, utcnow
from polymodal.db.models_economics import Budget, BudgetAlert, RateLimitOverride


async def tenant_plan(session: AsyncSession, *, tenant_id: uuid.UUID) -> str | None:
    result = await session.execute(select(Tenant.plan).where(Tenant.id == tenant_id))
    return result.scalar_one_or_none()


async def set_tenant_plan(session: AsyncSession, *, tenant_id: uuid.UUID, plan: str) -> None:
    await session.execute(update(Tenant).where(Tenant.id == tenant_id).values(plan=plan))


async def key_exists(session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    result = await session.execute(
        select(ApiKey.id).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
    )
    return result.scalar_one_or_none() is not None


async def list_overrides(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[RateLimitOverride]:
    result = await session.execute(
        select(RateLimitOverride).where(RateLimitOverride.tenant_id == tenant_id)
    )
    return list(result.scalars())


async def put_override(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    subject: str,
    key_id: uuid.UUID | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
) -> None:
    """Set (or, with both values None, remove) a subject's override."""
    row = (
        await session.execute(
            select(RateLimitOverride).where(
                RateLimitOverride.tenant_id == tenant_id, RateLimitOverride.subject == subject
            )
        )
    ).scalar_one_or_none()
    if requests_per_minute is None and tokens_per_minute is None:
        if row is not None:
            await session.delete(row)
        return
    if row is None:
        row = RateLimitOverride(tenant_id=tenant_id, subject=subject, key_id=key_id)
        session.add(row)
    row.requests_per_minute = requests_per_minute
    row.tokens_per_minute = tokens_per_minute
    row.updated_at = utcnow()
    await session.flush()


async def list_budgets(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[Budget]:
    result = await session.execute(select(Budget).where(Budget.tenant_id == tenant_id))
    return list(result.scalars())


async def put_budget(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    subject: str,
    key_id: uuid.UUID | None,
    monthly_limit_usd: Decimal,
    mode: str,
    alert_thresholds: list[float],
) -> Budget:
    row = (
        await session.execute(
            select(Budget).where(Budget.tenant_id == tenant_id, Budget.subject == subject)
        )
    ).scalar_one_or_none()
    if row is None:
        row = Budget(tenant_id=tenant_id, subject=subject, key_id=key_id)
        session.add(row)
    row.monthly_limit_usd = monthly_limit_usd
    row.mode = mode
    row.alert_thresholds = alert_thresholds
    row.updated_at = utcnow()
    await session.flush()
    return row


async def delete_budget(session: AsyncSession, *, tenant_id: uuid.UUID, subject: str) -> bool:
    result = await session.execute(
        delete(Budget).where(Budget.tenant_id == tenant_id, Budget.subject == subject)
    )
    return bool(getattr(result, "rowcount", 0))


async def month_spend(
    session: AsyncSession, *, tenant_id: uuid.UUID, key_id: uuid.UUID | None, since: datetime
) -> Decimal:
    """The ledger's cost since ``since`` for the tenant, or for one of its keys."""
    query = select(money_sum(session, UsageEvent.cost)).where(
        UsageEvent.tenant_id == tenant_id, UsageEvent.created_at >= since
    )
    if key_id is not None:
        query = query.where(UsageEvent.key_id == key_id)
    return money_value(session, (await session.execute(query)).scalar_one())


async def record_alert(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    subject: str,
    month: str,
    threshold: float,
    spent_usd: Decimal,
    limit_usd: Decimal,
) -> None:
    """Store the alert flag; a second crossing of the same threshold is ignored."""
    await session.execute(
        insert_ignoring(session, BudgetAlert).values(
            tenant_id=tenant_id,
            subject=subject,
            month=month,
            threshold=threshold,
            spent_usd=spent_usd,
            limit_usd=limit_usd,
            created_at=utcnow(),
        )
    )


async def list_alerts(
    session: AsyncSession, *, tenant_id: uuid.UUID, month: str
) -> list[BudgetAlert]:
    result = await session.execute(
        select(BudgetAlert)
        .where(BudgetAlert.tenant_id == tenant_id, BudgetAlert.month == month)
        .order_by(BudgetAlert.created_at)
    )
    return list(result.scalars())
