"""Reading and changing rate limits and budgets (the `/v1/budgets` and `/v1/limits`
endpoints). Authorization is checked here, from the one permission table.

Who may change what: a tenant admin (``limits:write``) may narrow the tenant's or a
key's limits within its plan's defaults; raising a limit above the plan, or changing the
plan, is the operator's business (the plan is what the tenant pays for).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import economics as db
from polymodal.db import repositories, system
from polymodal.db.models_economics import TENANT_SUBJECT
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.economics import RateSnapshot, from_nano
from polymodal.domain.errors import InvalidRequest, NotFound, PermissionDenied, ValidationFailed
from polymodal.domain.principal import Principal
from polymodal.tenancy.economics import (
    Economics,
    key_buckets,
    month_of,
    month_start,
    snapshot,
    tenant_buckets,
)
from polymodal.tenancy.rbac import Permission, require

MODES = ("hard", "soft")
MAX_THRESHOLDS = 5
MAX_RATE = 2**31 - 1  # rate_limit_overrides columns are 32-bit integers


@dataclass(frozen=True, slots=True)
class LimitsView:
    plan: str
    plan_rpm: int
    plan_tpm: int
    override_rpm: int | None
    override_tpm: int | None
    rpm: int
    tpm: int
    current: RateSnapshot | None  # the caller's buckets now, when limits are on


@dataclass(frozen=True, slots=True)
class AlertView:
    threshold: float
    spent_usd: Decimal
    at: datetime


@dataclass(frozen=True, slots=True)
class BudgetView:
    subject: str
    month: str
    monthly_limit_usd: Decimal | None  # None: no budget set
    mode: str | None
    alert_thresholds: tuple[float, ...]
    spent_usd: Decimal
    reserved_usd: Decimal
    alerts: list[AlertView] = field(default_factory=list)

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.monthly_limit_usd is None:
            return None
        return max(Decimal(0), self.monthly_limit_usd - self.spent_usd - self.reserved_usd)


async def _check_key(econ: Economics, tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
    async with tenant_session(econ.sessions, tenant_id) as session:
        if not await db.key_exists(session, tenant_id=tenant_id, key_id=key_id):
            raise NotFound(f"This tenant has no API key {key_id}.", code="key_not_found")


# --- limits ------------------------------------------------------------------------------


async def limits_view(
    econ: Economics, *, principal: Principal, key_id: uuid.UUID | None = None
) -> LimitsView:
    require(principal, Permission.BUDGETS_READ)
    if key_id is not None:
        await _check_key(econ, principal.tenant_id, key_id)
    terms = await econ.terms(principal.tenant_id)
    plan_rpm, plan_tpm = econ.plan_limits(terms.plan)
    if key_id is None:
        async with tenant_session(econ.sessions, principal.tenant_id) as session:
            rows = await db.list_overrides(session, tenant_id=principal.tenant_id)
        own = next((r for r in rows if r.subject == TENANT_SUBJECT), None)
        o_rpm = own.requests_per_minute if own else None
        o_tpm = own.tokens_per_minute if own else None
        rpm, tpm = terms.rpm, terms.tpm
    else:
        o_rpm, o_tpm = terms.keys.get(str(key_id), (None, None))
        rpm, tpm = min(o_rpm or terms.rpm, terms.rpm), min(o_tpm or terms.tpm, terms.tpm)
    current = None
    if econ.rate_limits:
        buckets = tenant_buckets(principal.tenant_id, terms, 0, requests=0)
        buckets += key_buckets(
            principal.tenant_id, key_id or principal.key_id, terms, 0, requests=0
        )
        verdict = await econ.limiter.acquire(buckets)  # cost 0: a look, not a take
        current = snapshot(buckets, verdict.states)
    return LimitsView(terms.plan, plan_rpm, plan_tpm, o_rpm, o_tpm, rpm, tpm, current)


def _check_plan(econ: Economics, plan: str | None, current: str) -> None:
    if plan is None:
        return
    if plan not in econ.plans:
        raise ValidationFailed(
            f"plan: unknown plan '{plan}' (known: {', '.join(econ.plans)}).",
            param="plan",
            code="unknown_plan",
        )
    if plan != current:
        raise PermissionDenied(
            f"plan: changing the plan from '{current}' to '{plan}' is done by the operator "
            "(polymodal admin), not through the API.",
            code="plan_change_not_allowed",
        )


def _check_ceiling(name: str, value: int | None, ceiling: int, plan: str) -> None:
    if value is not None and value > ceiling:
        raise ValidationFailed(
            f"{name}: {value} is above the '{plan}' plan's {ceiling}; a higher limit needs "
            "the operator.",
            param=name,
            code="above_plan_limit",
        )


async def set_limits(
    econ: Economics,
    *,
    principal: Principal,
    key_id: uuid.UUID | None,
    plan: str | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
) -> LimitsView:
    """Set the tenant's (``key_id`` None) or a key's overrides; None restores the plan
    default. Values were checked positive at the edge; here against the plan."""
    require(principal, Permission.LIMITS_WRITE)
    tenant_id = principal.tenant_id
    econ.invalidate(tenant_id)
    terms = await econ.terms(tenant_id)
    _check_plan(econ, plan, terms.plan)
    plan_rpm, plan_tpm = econ.plan_limits(terms.plan)
    _check_ceiling("requests_per_minute", requests_per_minute, plan_rpm, terms.plan)
    _check_ceiling("tokens_per_minute", tokens_per_minute, plan_tpm, terms.plan)
    subject = TENANT_SUBJECT if key_id is None else str(key_id)
    async with tenant_session(econ.sessions, tenant_id) as session, session.begin():
        if key_id is not None and not await db.key_exists(
            session, tenant_id=tenant_id, key_id=key_id
        ):
            raise NotFound(f"This tenant has no API key {key_id}.", code="key_not_found")
        await db.put_override(
            session,
            tenant_id=tenant_id,
            subject=subject,
            key_id=key_id,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        await repositories.append_audit(
            session,
            tenant_id=tenant_id,
            actor=str(principal.user_id),
            action="limits.set",
            target=subject,
            data={
                "requests_per_minute": requests_per_minute,
                "tokens_per_minute": tokens_per_minute,
            },
            at=datetime.now(UTC),
        )
    econ.invalidate(tenant_id)
    return await limits_view(econ, principal=principal, key_id=key_id)


async def operator_set_limits(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tenant: str,
    plans: Collection[str],
    plan: str | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
    clear: bool = False,
    actor: str,
) -> tuple[str, int | None, int | None]:
    """The operator's version (``polymodal admin tenant limits``): change the plan and set
    overrides above it. Running servers apply it within ``limits_cache_ttl_s``."""
    if plan is not None and plan not in plans:
        raise InvalidRequest(
            f"plan: unknown plan '{plan}' (known: {', '.join(plans)})", code="unknown_plan"
        )
    for name, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
    ):
        if value is not None and not 1 <= value <= MAX_RATE:
            raise InvalidRequest(
                f"{name}: must be between 1 and {MAX_RATE}, not {value}", code="invalid_limit"
            )
    async with system_session(sessions) as session:
        found = await system.find_tenant(session, ref=tenant)
    if found is None:
        raise NotFound(f"no tenant {tenant!r}", code="tenant_not_found")
    async with tenant_session(sessions, found.id) as session, session.begin():
        if plan is not None:
            await db.set_tenant_plan(session, tenant_id=found.id, plan=plan)
        if clear or requests_per_minute is not None or tokens_per_minute is not None:
            await db.put_override(  # a dimension left out follows the plan
                session,
                tenant_id=found.id,
                subject=TENANT_SUBJECT,
                key_id=None,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
            )
        await repositories.append_audit(
            session,
            tenant_id=found.id,
            actor=actor,
            action="limits.operator_set",
            target=TENANT_SUBJECT,
            data={
                "plan": plan,
                "requests_per_minute": requests_per_minute,
                "tokens_per_minute": tokens_per_minute,
            },
            at=datetime.now(UTC),
        )
    return plan or found.plan, requests_per_minute, tokens_per_minute


# --- budgets -----------------------------------------------------------------------------


async def budget_view(
    econ: Economics, *, principal: Principal, key_id: uuid.UUID | None
) -> BudgetView:
    require(principal, Permission.BUDGETS_READ)
    tenant_id = principal.tenant_id
    if key_id is not None:
        await _check_key(econ, tenant_id, key_id)
    subject = TENANT_SUBJECT if key_id is None else str(key_id)
    terms = await econ.terms(tenant_id)
    month = month_of(econ.now())
    budget = terms.budgets.get(subject)
    async with tenant_session(econ.sessions, tenant_id) as session:
        alerts = [
            AlertView(a.threshold, a.spent_usd, a.created_at)
            for a in await db.list_alerts(session, tenant_id=tenant_id, month=month)
            if a.subject == subject
        ]
        ledger = await db.month_spend(
            session, tenant_id=tenant_id, key_id=key_id, since=month_start(month)
        )
    spent, reserved = ledger, Decimal(0)
    if budget is not None:
        account = econ.account(tenant_id, budget, month)
        status = await econ.store.status(account)
        if status is None:
            await econ.reconcile(tenant_id, budget, account)
            status = await econ.store.status(account)
        if status is not None:
            spent, reserved = from_nano(status[0]), from_nano(status[1])
    return BudgetView(
        subject=subject,
        month=month,
        monthly_limit_usd=budget.limit if budget else None,
        mode=("hard" if budget.hard else "soft") if budget else None,
        alert_thresholds=budget.thresholds if budget else (),
        spent_usd=spent,
        reserved_usd=reserved,
        alerts=alerts,
    )


async def set_budget(
    econ: Economics,
    *,
    principal: Principal,
    key_id: uuid.UUID | None,
    monthly_limit_usd: Decimal,
    mode: str,
    alert_thresholds: list[float] | None,
) -> BudgetView:
    require(principal, Permission.BUDGETS_WRITE)
    if monthly_limit_usd < 0:  # also checked at the edge; services stand on their own
        raise ValidationFailed(
            f"monthly_limit_usd: must be zero or more, not {monthly_limit_usd}.",
            param="monthly_limit_usd",
        )
    if mode not in MODES:
        raise ValidationFailed(f"mode: must be 'hard' or 'soft', not '{mode}'.", param="mode")
    thresholds = sorted(set(alert_thresholds or econ.default_thresholds))
    tenant_id = principal.tenant_id
    subject = TENANT_SUBJECT if key_id is None else str(key_id)
    async with tenant_session(econ.sessions, tenant_id) as session, session.begin():
        if key_id is not None and not await db.key_exists(
            session, tenant_id=tenant_id, key_id=key_id
        ):
            raise NotFound(f"This tenant has no API key {key_id}.", code="key_not_found")
        await db.put_budget(
            session,
            tenant_id=tenant_id,
            subject=subject,
            key_id=key_id,
            monthly_limit_usd=monthly_limit_usd,
            mode=mode,
            alert_thresholds=thresholds,
        )
        await repositories.append_audit(
            session,
            tenant_id=tenant_id,
            actor=str(principal.user_id),
            action="budget.set",
            target=subject,
            data={"monthly_limit_usd": str(monthly_limit_usd), "mode": mode},
            at=datetime.now(UTC),
        )
    econ.invalidate(tenant_id)
    return await budget_view(econ, principal=principal, key_id=key_id)


async def delete_budget(econ: Economics, *, principal: Principal, key_id: uuid.UUID | None) -> None:
    require(principal, Permission.BUDGETS_WRITE)
    tenant_id = principal.tenant_id
    subject = TENANT_SUBJECT if key_id is None else str(key_id)
    async with tenant_session(econ.sessions, tenant_id) as session, session.begin():
        if not await db.delete_budget(session, tenant_id=tenant_id, subject=subject):
            raise NotFound("There is no budget to remove.", code="budget_not_found")
        await repositories.append_audit(
            session,
            tenant_id=tenant_id,
            actor=str(principal.user_id),
            action="budget.delete",
            target=subject,
            at=datetime.now(UTC),
        )
    econ.invalidate(tenant_id)
