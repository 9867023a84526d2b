"""The gateway's meter: rate limits and budget reservations before every model call,
settlement after it.

Hot-path cost: the tenant's terms (plan, overrides, budgets) are cached per process for
``limits_cache_ttl_s``; a call then makes one limiter round-trip, plus one reservation
round-trip when a budget applies, and its settlement runs off the response path.
Settling late is safe for hard budgets: until it lands, the reservation (an upper bound
of the cost) still counts.

Bounds, stated once:
- Rate limits are exact across processes sharing Redis (one Lua script per call).
- A hard budget is never exceeded by calls whose cost is within their estimate (the
  estimate is prompt + ``max_tokens`` at the most expensive candidate); without
  ``max_tokens`` the estimate assumes ``estimate_output_tokens``, and a longer answer can
  overspend by its excess.
- After a Redis restart (or in a new process, in-process profile) the month's spend is
  read back from the usage ledger, which lags by the rows not yet flushed
  (``usage_flush_interval_s``) and misses calls in flight at the restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.memory import TTLCache
from polymodal.db import economics as db
from polymodal.db.models_economics import TENANT_SUBJECT
from polymodal.db.scope import tenant_session
from polymodal.domain import ids
from polymodal.domain.economics import Quota, RateSnapshot, from_nano, to_nano
from polymodal.domain.errors import BudgetExceeded, RateLimitExceeded, ServiceUnavailable
from polymodal.domain.principal import Principal
from polymodal.observability.economics import EconomicsMetrics
from polymodal.observability.logging import get_logger
from polymodal.tenancy.budgets import Account, BudgetStore, Reservation
from polymodal.tenancy.limits import Bucket, BucketState, Limiter

log = get_logger("polymodal.economics")
USD = Decimal("0.000001")


def month_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def month_start(month: str) -> datetime:
    return datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=UTC)


def usd(amount: Decimal) -> str:
    return str(amount.quantize(USD))


@dataclass(frozen=True, slots=True)
class BudgetTerms:
    subject: str  # "tenant" or a key id
    limit: Decimal
    hard: bool
    thresholds: tuple[float, ...]

    @property
    def kind(self) -> str:
        return "tenant" if self.subject == TENANT_SUBJECT else "key"


@dataclass(frozen=True, slots=True)
class Terms:
    """What applies to one tenant's calls, as cached per process."""

    plan: str
    rpm: int
    tpm: int
    keys: Mapping[str, tuple[int | None, int | None]]  # key id -> (rpm, tpm) overrides
    budgets: Mapping[str, BudgetTerms]  # subject -> budget


def bucket_prefix(tenant_id: uuid.UUID) -> str:
    return f"{{{tenant_id}}}"


def tenant_buckets(
    tenant_id: uuid.UUID, terms: Terms, tokens: int, requests: int = 1
) -> list[Bucket]:
    """``requests=0, tokens=0`` looks at the buckets without taking anything."""
    p = bucket_prefix(tenant_id)
    return [
        Bucket(f"{p}:tenant:rpm", terms.rpm, requests),
        Bucket(f"{p}:tenant:tpm", terms.tpm, tokens),
    ]


def key_buckets(
    tenant_id: uuid.UUID, key_id: uuid.UUID | None, terms: Terms, tokens: int, requests: int = 1
) -> list[Bucket]:
    """A key has buckets of its own only when it has its own limits."""
    if key_id is None or str(key_id) not in terms.keys:
        return []
    rpm, tpm = terms.keys[str(key_id)]
    p = f"{bucket_prefix(tenant_id)}:key:{key_id}"
    out = []
    if rpm is not None:
        out.append(Bucket(p + ":rpm", rpm, requests))
    if tpm is not None:
        out.append(Bucket(p + ":tpm", tpm, tokens))
    return out


def snapshot(buckets: list[Bucket], states: tuple[BucketState, ...]) -> RateSnapshot:
    """The tightest request bucket and the tightest token bucket, as OpenAI shows them."""

    def tightest(suffix: str) -> Quota:
        pairs = [(b, s) for b, s in zip(buckets, states, strict=True) if b.name.endswith(suffix)]
        b, s = min(pairs, key=lambda p: p[1].remaining)
        return Quota(limit=b.per_minute, remaining=s.remaining, reset_s=s.reset_s)

    return RateSnapshot(requests=tightest(":rpm"), tokens=tightest(":tpm"))


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def rate_headers(snap: RateSnapshot) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(snap.requests.limit),
        "x-ratelimit-remaining-requests": str(snap.requests.remaining),
        "x-ratelimit-reset-requests": duration(snap.requests.reset_s),
        "x-ratelimit-limit-tokens": str(snap.tokens.limit),
        "x-ratelimit-remaining-tokens": str(snap.tokens.remaining),
        "x-ratelimit-reset-tokens": duration(snap.tokens.reset_s),
    }


class MeterTicket:
    """An admitted call (``domain.economics.Ticket``)."""

    __slots__ = ("_done", "_meter", "accounts", "plan", "principal", "rid", "snapshot", "tokens")

    def __init__(
        self,
        meter: Economics,
        principal: Principal,
        plan: str,
        snap: RateSnapshot | None,
        tokens: list[Bucket],
    ) -> None:
        self._meter = meter
        self._done = False
        self.principal = principal
        self.plan = plan
        self.snapshot = snap
        self.tokens = tokens  # token buckets charged at the estimate
        self.accounts: list[tuple[Account, BudgetTerms]] = []
        self.rid = ""

    def settle(self, *, tokens: int, cost: Decimal) -> None:
        if self._done:
            return
        self._done = True
        self._meter.spawn(self._meter.finish(self, tokens=tokens, actual=to_nano(cost)))

    def release(self) -> None:
        self.settle(tokens=0, cost=Decimal(0))


class Economics:
    """Implements ``domain.economics.Meter`` over a ``Limiter`` and a ``BudgetStore``."""

    def __init__(
        self,
        *,
        limiter: Limiter,
        store: BudgetStore,
        sessions: async_sessionmaker[AsyncSession],
        plans: Mapping[str, tuple[int, int]],
        rate_limits: bool,
        reservation_ttl_s: float,
        alert_thresholds: tuple[float, ...],
        cache_ttl_s: float,
        metrics: EconomicsMetrics | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.limiter = limiter
        self.store = store
        self.sessions = sessions
        self.plans = dict(plans)
        self.rate_limits = rate_limits
        self.default_thresholds = alert_thresholds
        self._ttl = reservation_ttl_s
        self._cache_ttl = cache_ttl_s
        self._cache: TTLCache[Terms] = TTLCache(max_entries=10_000)
        self._metrics = metrics
        self.now = now
        self._tasks: set[asyncio.Task[None]] = set()

    # --- terms ---------------------------------------------------------------------------

    def plan_limits(self, plan: str) -> tuple[int, int]:
        """A plan's (rpm, tpm); an unknown plan (removed from settings) gets the
        smallest configured one rather than no limit."""
        known = self.plans.get(plan)
        if known is None:
            log.warning("tenant plan not configured; using the smallest plan", plan=plan)
            return min(self.plans.values())
        return known

    async def terms(self, tenant_id: uuid.UUID) -> Terms:
        key = str(tenant_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        async with tenant_session(self.sessions, tenant_id) as session:
            plan = await db.tenant_plan(session, tenant_id=tenant_id) or "free"
            overrides = await db.list_overrides(session, tenant_id=tenant_id)
            budgets = await db.list_budgets(session, tenant_id=tenant_id)
        rpm, tpm = self.plan_limits(plan)
        keys: dict[str, tuple[int | None, int | None]] = {}
        for o in overrides:
            if o.subject == TENANT_SUBJECT:
                rpm = o.requests_per_minute or rpm
                tpm = o.tokens_per_minute or tpm
            else:
                keys[o.subject] = (o.requests_per_minute, o.tokens_per_minute)
        terms = Terms(
            plan=plan,
            rpm=rpm,
            tpm=tpm,
            keys=keys,
            budgets={
                b.subject: BudgetTerms(
                    b.subject,
                    b.monthly_limit_usd,
                    b.mode == "hard",
                    tuple(b.alert_thresholds or self.default_thresholds),
                )
                for b in budgets
            },
        )
        self._cache.set(key, terms, ttl_s=self._cache_ttl)
        return terms

    def invalidate(self, tenant_id: uuid.UUID) -> None:
        """A change made here applies here at once (elsewhere within the cache TTL)."""
        self._cache.pop(str(tenant_id))

    def account(self, tenant_id: uuid.UUID, budget: BudgetTerms, month: str) -> Account:
        return Account(
            name=f"{bucket_prefix(tenant_id)}:{budget.subject}",
            month=month,
            limit=to_nano(budget.limit),
            hard=budget.hard,
        )

    # --- admission -----------------------------------------------------------------------

    async def admit(
        self, principal: Principal, *, tokens: int, cost: Decimal, rate_limited: bool = True
    ) -> MeterTicket:
        terms = await self.terms(principal.tenant_id)
        snap: RateSnapshot | None = None
        charged: list[Bucket] = []
        if self.rate_limits and rate_limited:
            buckets = tenant_buckets(principal.tenant_id, terms, tokens)
            buckets += key_buckets(principal.tenant_id, principal.key_id, terms, tokens)
            snap, charged = await self._limit(principal, terms, buckets)
        ticket = MeterTicket(self, principal, terms.plan, snap, charged)
        budgets = [terms.budgets.get(TENANT_SUBJECT)]
        if principal.key_id is not None:
            budgets.append(terms.budgets.get(str(principal.key_id)))
        applicable = [b for b in budgets if b is not None]
        if applicable:
            try:
                await self._reserve(ticket, applicable, to_nano(cost))
            except BaseException:
                ticket.release()  # give the tokens back
                raise
        return ticket

    async def _limit(
        self, principal: Principal, terms: Terms, buckets: list[Bucket]
    ) -> tuple[RateSnapshot | None, list[Bucket]]:
        for b in buckets:
            if b.cost > b.per_minute:
                self._count_rejection(terms.plan, "too_large")
                who = "this API key" if ":key:" in b.name else "this tenant"
                raise RateLimitExceeded(
                    f"Request too large: it may use up to {b.cost} tokens (prompt plus "
                    f"max_tokens), more than the {b.per_minute} tokens per minute allowed "
                    f"for {who} on the '{terms.plan}' plan. Lower max_tokens or shorten "
                    "the messages.",
                    retry_after=None,
                    code="request_too_large",
                )
        try:
            verdict = await self.limiter.acquire(buckets)
        except Exception as e:  # a rate limiter outage must not take the API down
            self._degraded("limits", e)
            return None, []
        snap = snapshot(buckets, verdict.states)
        if not verdict.allowed:
            refused = buckets[verdict.refused or 0]
            kind = "requests" if refused.name.endswith(":rpm") else "tokens"
            self._count_rejection(terms.plan, kind)
            who = "this API key" if ":key:" in refused.name else "this tenant"
            unit = "requests" if kind == "requests" else "tokens"
            raise RateLimitExceeded(
                f"Rate limit reached: {refused.per_minute} {unit} per minute for {who} "
                f"(plan '{terms.plan}'). Retry after {verdict.retry_after_s:.2f} s.",
                retry_after=verdict.retry_after_s,
                headers=rate_headers(snap),
            )
        return snap, [b for b in buckets if b.name.endswith(":tpm")]

    async def _reserve(self, ticket: MeterTicket, budgets: list[BudgetTerms], amount: int) -> None:
        principal = ticket.principal
        month = month_of(self.now())
        accounts = [self.account(principal.tenant_id, b, month) for b in budgets]
        rid = ids.hex_id()
        try:
            result = await self.store.reserve(accounts, rid=rid, amount=amount, ttl_s=self._ttl)
            for _ in range(3):
                if not result.missing:
                    break
                for i in result.missing:
                    await self.reconcile(principal.tenant_id, budgets[i], accounts[i])
                result = await self.store.reserve(accounts, rid=rid, amount=amount, ttl_s=self._ttl)
        except Exception as e:
            self._degraded("budgets", e)
            if any(b.hard for b in budgets):
                raise ServiceUnavailable(
                    "Budget state is unavailable right now, so calls under a hard budget "
                    "are paused; retry shortly.",
                    code="budget_state_unavailable",
                ) from e
            return  # soft budgets only: let the call through unmetered
        if not result.ok:
            self._refuse(ticket, budgets, accounts, result, amount)
        if self._metrics is not None:
            self._metrics.reserved_usd.labels(ticket.plan).inc(float(from_nano(amount)))
        ticket.accounts = list(zip(accounts, budgets, strict=True))
        ticket.rid = rid

    def _refuse(
        self,
        ticket: MeterTicket,
        budgets: list[BudgetTerms],
        accounts: list[Account],
        result: Reservation,
        amount: int,
    ) -> NoReturn:
        i = result.refused if result.refused is not None else 0
        budget, month = budgets[i], accounts[i].month
        if self._metrics is not None:
            self._metrics.budget_refusal(ticket.plan, budget.kind)
        spent = from_nano(result.spent[0]) if result.spent else Decimal(0)
        held = from_nano(result.reserved[0]) if result.reserved else Decimal(0)
        where = (
            "PUT /v1/budgets"
            if budget.kind == "tenant"
            else f"PUT /v1/keys/{budget.subject}/budget"
        )
        owner = "this tenant" if budget.kind == "tenant" else "this API key"
        raise BudgetExceeded(
            f"The monthly budget of {owner} is used up for {month}: USD {usd(spent)} spent "
            f"and USD {usd(held)} held by calls in progress, of USD {usd(budget.limit)}; "
            f"this call could cost up to USD {usd(from_nano(amount))}. "
            f"An admin can raise the budget with {where}."
        )

    async def reconcile(self, tenant_id: uuid.UUID, budget: BudgetTerms, account: Account) -> None:
        """Seed a missing spend counter from the usage ledger."""
        key_id = None if budget.subject == TENANT_SUBJECT else uuid.UUID(budget.subject)
        async with tenant_session(self.sessions, tenant_id) as session:
            spent = await db.month_spend(
                session, tenant_id=tenant_id, key_id=key_id, since=month_start(account.month)
            )
        await self.store.seed(account, spent=to_nano(spent))
        log.info("budget spend reconciled from the ledger", tenant_id=str(tenant_id))

    # --- settlement (off the response path) ----------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for pending settlements (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def finish(self, ticket: MeterTicket, *, tokens: int, actual: int) -> None:
        try:
            for b in ticket.tokens:
                if b.cost > tokens:
                    await self.limiter.refund(replace(b, cost=b.cost - tokens))
            if not ticket.accounts:
                return
            accounts = [a for a, _ in ticket.accounts]
            settled = await self.store.settle(accounts, rid=ticket.rid, actual=actual)
            if self._metrics is not None:
                self._metrics.settled_usd.labels(ticket.plan).inc(float(from_nano(actual)))
            for (account, budget), s in zip(ticket.accounts, settled, strict=True):
                if s.before is None or s.after is None:
                    continue
                for threshold in budget.thresholds:
                    mark = account.limit * threshold
                    if s.before < mark <= s.after:
                        await self._alert(ticket, account, budget, threshold, s.after)
        except Exception as e:  # settlement must never break anything else
            self._degraded("settle", e)

    async def _alert(
        self,
        ticket: MeterTicket,
        account: Account,
        budget: BudgetTerms,
        threshold: float,
        spent: int,
    ) -> None:
        """Metric, log line and stored flag; the crossing is seen by exactly one settle
        (counters are atomic), and the table's unique key absorbs a repeat after a
        reconciliation."""
        tenant_id = ticket.principal.tenant_id
        if self._metrics is not None:
            self._metrics.budget_alert(ticket.plan, budget.kind, threshold)
        log.warning(
            "budget alert threshold crossed",
            tenant_id=str(tenant_id),
            budget=budget.kind,
            threshold=threshold,
            month=account.month,
            spent_usd=usd(from_nano(spent)),
            limit_usd=usd(budget.limit),
            mode="hard" if budget.hard else "soft",
        )
        async with tenant_session(self.sessions, tenant_id) as session, session.begin():
            await db.record_alert(
                session,
                tenant_id=tenant_id,
                subject=budget.subject,
                month=account.month,
                threshold=threshold,
                spent_usd=from_nano(spent),
                limit_usd=budget.limit,
            )

    # --- metrics -------------------------------------------------------------------------

    def _count_rejection(self, plan: str, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.rate_limit(plan, kind)

    def _degraded(self, kind: str, error: Exception) -> None:
        if self._metrics is not None:
            self._metrics.degraded.labels(kind).inc()
        log.warning("economics store unavailable; degrading", kind=kind, error=type(error).__name__)
