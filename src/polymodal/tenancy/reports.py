"""Usage and cost reports for one tenant: cost by feature, deployment, day or user; cost per
active user in a month; how much of the cost the top N% of users make. Money is Decimal
end to end (summed exactly in SQL, db/dialects.money_sum); days and months are UTC.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import repositories, usage_reports
from polymodal.db.scope import tenant_session
from polymodal.db.usage_reports import GROUPS, CostGroup
from polymodal.domain.errors import InvalidRequest
from polymodal.domain.principal import Principal
from polymodal.tenancy.rbac import Permission, require

DEFAULT_DAYS = 30
MAX_DAYS = 366 * 3  # a report range longer than this is almost surely a typo


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC


def _moment(value: str, field: str, *, end: bool) -> datetime:
    """``YYYY-MM-DD`` (a whole UTC day; as ``to`` it includes that day) or an ISO
    datetime (naive means UTC)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            at = datetime.combine(day, time(), tzinfo=UTC)
            return at + timedelta(days=1) if end else at
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{field}: expected a date (YYYY-MM-DD) or an ISO datetime, got {value!r}",
            code="invalid_period",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def period(start: str | None, end: str | None, *, now: datetime | None = None) -> Period:
    """The report range from ``from``/``to`` parameters (default: the last 30 days)."""
    now = now or datetime.now(UTC)
    stop = _moment(end, "to", end=True) if end else now
    begin = _moment(start, "from", end=False) if start else stop - timedelta(days=DEFAULT_DAYS)
    if begin >= stop:
        raise InvalidRequest("from: must be before to", code="invalid_period")
    if stop - begin > timedelta(days=MAX_DAYS):
        raise InvalidRequest(f"to: a report covers at most {MAX_DAYS} days", code="invalid_period")
    return Period(begin, stop)


def month(value: str | None, *, now: datetime | None = None) -> tuple[str, Period]:
    """``YYYY-MM`` (default: the current UTC month) and its period."""
    now = now or datetime.now(UTC)
    label = value or now.strftime("%Y-%m")
    try:
        year, mon = (int(p) for p in label.split("-"))
        first = datetime(year, mon, 1, tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(
            f"month: expected YYYY-MM, got {label!r}", code="invalid_month"
        ) from None
    nxt = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return f"{year:04d}-{mon:02d}", Period(first, nxt)


@dataclass(frozen=True, slots=True)
class CostReport:
    group_by: str
    period: Period
    rows: list[CostGroup]

    @property
    def total_cost(self) -> Decimal:
        return sum((r.cost for r in self.rows), Decimal(0))

    @property
    def total_requests(self) -> int:
        return sum(r.requests for r in self.rows)


@dataclass(frozen=True, slots=True)
class UserCost:
    user_id: str  # "" for calls without a user
    requests: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class ActiveUsers:
    month: str
    active_users: int
    total_cost: Decimal
    cost_per_active_user: Decimal
    users: list[UserCost]


@dataclass(frozen=True, slots=True)
class Concentration:
    month: str
    top_percent: Decimal
    users: int
    top_users: int
    total_cost: Decimal
    top_cost: Decimal
    share: Decimal  # top_cost / total_cost, 0..1


CENT_FRACTION = Decimal("0.0000000001")  # the ledger's scale (NUMERIC(20, 10))


def concentration_of(costs: list[Decimal], top_percent: Decimal) -> tuple[int, Decimal, Decimal]:
    """(top users, their cost, their share) for per-user ``costs``: the top
    ``ceil(users * top_percent / 100)`` users by cost (at least one when there are users)."""
    if not costs:
        return 0, Decimal(0), Decimal(0)
    ranked = sorted(costs, reverse=True)
    k = max(1, math.ceil(len(ranked) * top_percent / 100))
    top = sum(ranked[:k], Decimal(0))
    total = sum(ranked, Decimal(0))
    share = (top / total).quantize(Decimal("0.000001")) if total else Decimal(0)
    return k, top, share


class UsageReports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def costs(self, principal: Principal, *, group_by: str, span: Period) -> CostReport:
        require(principal, Permission.USAGE_READ)
        if group_by not in GROUPS:
            raise InvalidRequest(
                f"group_by: must be one of {', '.join(GROUPS)}", code="invalid_group_by"
            )
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            rows = await usage_reports.cost_groups(
                session,
                tenant_id=principal.tenant_id,
                group_by=group_by,
                start=span.start,
                end=span.end,
            )
        if group_by == "day":
            rows.sort(key=lambda r: r.key)
        else:
            rows.sort(key=lambda r: (-r.cost, r.key))
        return CostReport(group_by, span, rows)

    async def export_costs(
        self, principal: Principal, *, group_by: str, span: Period
    ) -> Iterator[str]:
        """The cost report as CSV lines (header first). An export is audited."""
        report = await self.costs(principal, group_by=group_by, span=span)
        await self._audit_export(principal, group_by, span, rows=len(report.rows))
        return csv_lines(report)

    async def export_events(self, principal: Principal, *, span: Period) -> AsyncIterator[str]:
        """Every ledger row in the period as CSV lines (header first), streamed from the
        database. The export is audited before the first line is produced."""
        require(principal, Permission.USAGE_READ)
        await self._audit_export(principal, "events", span, rows=None)
        return self._event_lines(principal.tenant_id, span)

    async def _event_lines(self, tenant_id: uuid.UUID, span: Period) -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")

        def line(values: Sequence[object]) -> str:
            buf.seek(0)
            buf.truncate()
            writer.writerow(values)
            return buf.getvalue()

        yield line(EVENT_COLUMNS)
        async with tenant_session(self._sessions, tenant_id) as session, session.begin():
            async for e in usage_reports.stream_events(
                session, tenant_id=tenant_id, start=span.start, end=span.end
            ):
                yield line(
                    (
                        e.created_at.isoformat(),
                        e.event_id or "",
                        _cell(e.request_id),
                        e.user_id or "",
                        e.key_id or "",
                        _cell(e.feature),
                        e.kind,
                        e.deployment,
                        e.provider,
                        e.model,
                        e.tier or "",
                        e.task or "",
                        e.status,
                        int(e.stream),
                        int(e.cache_hit),
                        e.attempts,
                        e.tokens_in,
                        e.tokens_out,
                        format(e.cost, "f"),
                        round(e.latency_ms, 3),
                        "" if e.ttfb_ms is None else round(e.ttfb_ms, 3),
                    )
                )

    async def _audit_export(
        self, principal: Principal, what: str, span: Period, *, rows: int | None
    ) -> None:
        data: dict[str, object] = {"from": span.start.isoformat(), "to": span.end.isoformat()}
        if rows is not None:
            data["rows"] = rows
        async with (
            tenant_session(self._sessions, principal.tenant_id) as session,
            session.begin(),
        ):
            await repositories.append_audit(
                session,
                tenant_id=principal.tenant_id,
                actor=f"user:{principal.user_id}",
                action="usage.export",
                target=what,
                data=data,
                at=datetime.now(UTC),
            )

    async def _user_costs(self, principal: Principal, span: Period) -> list[UserCost]:
        require(principal, Permission.USAGE_READ)
        async with tenant_session(self._sessions, principal.tenant_id) as session:
            raw = await usage_reports.cost_per_user(
                session, tenant_id=principal.tenant_id, start=span.start, end=span.end
            )
        users = [UserCost("" if u is None else str(u), n, c) for u, n, c in raw]
        users.sort(key=lambda u: (-u.cost, u.user_id))
        return users

    async def active_users(self, principal: Principal, *, month_label: str | None) -> ActiveUsers:
        label, span = month(month_label)
        users = await self._user_costs(principal, span)
        active = [u for u in users if u.user_id]
        total = sum((u.cost for u in users), Decimal(0))
        per_user = (total / len(active)).quantize(CENT_FRACTION) if active else Decimal(0)
        return ActiveUsers(label, len(active), total, per_user, users)

    async def concentration(
        self, principal: Principal, *, month_label: str | None, top_percent: Decimal
    ) -> Concentration:
        if not Decimal(0) < top_percent <= Decimal(100):
            raise InvalidRequest(
                "top_percent: must be more than 0 and at most 100", code="invalid_top_percent"
            )
        label, span = month(month_label)
        users = [u for u in await self._user_costs(principal, span) if u.user_id]
        k, top, share = concentration_of([u.cost for u in users], top_percent)
        total = sum((u.cost for u in users), Decimal(0))
        return Concentration(label, top_percent, len(users), k, total, top, share)


CSV_HEADER = ("requests", "tokens_in", "tokens_out", "cost_usd")
EVENT_COLUMNS = (
    "created_at",
    "event_id",
    "request_id",
    "user_id",
    "key_id",
    "feature",
    "kind",
    "deployment",
    "provider",
    "model",
    "tier",
    "task",
    "status",
    "stream",
    "cache_hit",
    "attempts",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "ttfb_ms",
)


def csv_lines(report: CostReport) -> Iterator[str]:
    """One CSV line at a time (header first), for a streamed response."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")

    def line(values: tuple[object, ...]) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow(values)
        return buf.getvalue()

    yield line((report.group_by, *CSV_HEADER))
    for r in report.rows:
        yield line((_cell(r.key), r.requests, r.tokens_in, r.tokens_out, format(r.cost, "f")))


def _cell(text: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
