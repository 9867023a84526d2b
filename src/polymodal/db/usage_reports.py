"""Tenant-scoped reads of the usage ledger. ``tenant_id`` is a required keyword of every
function; sums of money are exact on both backends (db/dialects.money_sum)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.dialects import money_sum, money_value, utc_day
from polymodal.db.models import UsageEvent

GROUPS = ("feature", "deployment", "day", "user")


@dataclass(frozen=True, slots=True)
class CostGroup:
    key: str  # the feature tag, deployment id, UTC day, or user id ("" = no user)
    requests: int
    tokens_in: int
    tokens_out: int
    cost: Decimal


def _group_column(session: AsyncSession, group_by: str) -> Any:
    if group_by == "feature":
        return UsageEvent.feature
    if group_by == "deployment":
        return UsageEvent.deployment
    if group_by == "day":
        return utc_day(session, UsageEvent.created_at)
    if group_by == "user":
        return UsageEvent.user_id
    raise ValueError(f"group_by must be one of {GROUPS}")


async def cost_groups(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    group_by: str,
    start: datetime,
    end: datetime,
) -> list[CostGroup]:
    """Requests, tokens and cost in ``[start, end)`` grouped by one dimension."""
    key = _group_column(session, group_by)
    stmt = (
        select(
            key,
            func.count(UsageEvent.id),
            func.coalesce(func.sum(UsageEvent.tokens_in), 0),
            func.coalesce(func.sum(UsageEvent.tokens_out), 0),
            money_sum(session, UsageEvent.cost),
        )
        .where(
            UsageEvent.tenant_id == tenant_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(key)
    )
    return [
        CostGroup(
            key="" if k is None else str(k),
            requests=int(n),
            tokens_in=int(t_in),
            tokens_out=int(t_out),
            cost=money_value(session, raw),
        )
        for k, n, t_in, t_out, raw in (await session.execute(stmt)).all()
    ]


async def cost_per_user(
    session: AsyncSession, *, tenant_id: uuid.UUID, start: datetime, end: datetime
) -> list[tuple[uuid.UUID | None, int, Decimal]]:
    """(user id or None, calls, cost) for every user with a ledger row in ``[start, end)``."""
    stmt = (
        select(UsageEvent.user_id, func.count(UsageEvent.id), money_sum(session, UsageEvent.cost))
        .where(
            UsageEvent.tenant_id == tenant_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .group_by(UsageEvent.user_id)
    )
    return [
        (uid, int(n), money_value(session, raw))
        for uid, n, raw in (await session.execute(stmt)).all()
    ]


async def stream_events(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    chunk: int = 1000,
) -> AsyncIterator[UsageEvent]:
    """Every ledger row in ``[start, end)``, oldest first, read in chunks from a server-side
    cursor (the caller holds the transaction open while it iterates)."""
    result = await session.stream_scalars(
        select(UsageEvent)
        .where(
            UsageEvent.tenant_id == tenant_id,
            UsageEvent.created_at >= start,
            UsageEvent.created_at < end,
        )
        .order_by(UsageEvent.created_at, UsageEvent.id)
        .execution_options(yield_per=chunk)
    )
    async for row in result:
        yield row
