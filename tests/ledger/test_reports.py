"""Cost reports on SQLite and PostgreSQL: exact Decimal sums over known rows, UTC day and
month boundaries, per active user, concentration, CSV, tenant scoping, permissions."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.domain.errors import InvalidRequest, PermissionDenied
from polymodal.domain.principal import Role
from polymodal.tenancy import reports
from polymodal.tenancy.reports import UsageReports, concentration_of
from tests.ledger.conftest import Tenant, insert, new_tenant, usage, utc

U1, U2, U3 = (uuid.UUID(int=i) for i in (1, 2, 3))
OCTOBER = reports.period("2026-10-01", "2026-10-31")


@pytest.fixture
async def october(sessions: async_sessionmaker[AsyncSession]) -> Tenant:
    """One tenant's October: costs chosen so that a floating-point sum would be wrong,
    rows on the first and last microsecond of the month, and rows just outside it."""
    a = await new_tenant(sessions)
    b = await new_tenant(sessions)
    t = a.id
    await insert(
        sessions,
        [
            usage(t, user=U1, cost="0.1000000001", at=utc(2026, 10, 1), feature="template:blog"),
            usage(t, user=U1, cost="0.2000000002", at=utc(2026, 10, 1, 23, 59, 59, 999999)),
            usage(
                t,
                user=U1,
                cost="1.0000000003",
                at=utc(2026, 10, 2, 12),
                feature="chatbot:c1",
                deployment="fake-anthropic",
            ),
            usage(t, user=U2, cost="0.0000000001", at=utc(2026, 10, 31, 23, 59, 59, 999999)),
            usage(t, user=U3, cost="5.5", at=utc(2026, 10, 15), deployment="fake-anthropic"),
            usage(t, user=None, cost="0.25", at=utc(2026, 10, 20)),
            # Outside October, and another tenant's row inside it.
            usage(t, user=U1, cost="7", at=utc(2026, 11, 1)),
            usage(t, user=U1, cost="9", at=utc(2026, 9, 30, 23, 59, 59, 999999)),
            usage(b.id, user=U1, cost="100", at=utc(2026, 10, 5)),
        ],
    )
    return a


def _by_key(report: reports.CostReport) -> dict[str, tuple[int, Decimal]]:
    return {r.key: (r.requests, r.cost) for r in report.rows}


async def test_cost_by_feature_is_exact(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    report = await UsageReports(sessions).costs(
        october.principal(), group_by="feature", span=OCTOBER
    )
    assert _by_key(report) == {
        "api": (4, Decimal("5.9500000003")),
        "template:blog": (1, Decimal("0.1000000001")),
        "chatbot:c1": (1, Decimal("1.0000000003")),
    }
    assert [r.key for r in report.rows] == ["api", "chatbot:c1", "template:blog"]  # by cost
    assert report.total_cost == Decimal("7.0500000007")
    assert all(isinstance(r.cost, Decimal) for r in report.rows)


async def test_cost_by_day_deployment_and_user(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    service = UsageReports(sessions)
    p = october.principal()
    by_day = await service.costs(p, group_by="day", span=OCTOBER)
    assert [(r.key, r.requests, r.cost) for r in by_day.rows] == [
        ("2026-10-01", 2, Decimal("0.3000000003")),
        ("2026-10-02", 1, Decimal("1.0000000003")),
        ("2026-10-15", 1, Decimal("5.5000000000")),
        ("2026-10-20", 1, Decimal("0.2500000000")),
        ("2026-10-31", 1, Decimal("0.0000000001")),
    ]
    by_deployment = await service.costs(p, group_by="deployment", span=OCTOBER)
    assert _by_key(by_deployment) == {
        "fake-openai": (4, Decimal("0.5500000004")),
        "fake-anthropic": (2, Decimal("6.5000000003")),
    }
    by_user = await service.costs(p, group_by="user", span=OCTOBER)
    assert _by_key(by_user) == {
        str(U3): (1, Decimal("5.5")),
        str(U1): (3, Decimal("1.3000000006")),
        "": (1, Decimal("0.25")),
        str(U2): (1, Decimal("0.0000000001")),
    }
    tokens = {r.key: (r.tokens_in, r.tokens_out) for r in by_user.rows}
    assert tokens[str(U1)] == (30, 15)


async def test_a_period_is_half_open_and_utc(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    span = reports.period("2026-10-31T23:59:59.999999", "2026-11-01T00:00:00")
    report = await UsageReports(sessions).costs(october.principal(), group_by="day", span=span)
    assert [(r.key, r.cost) for r in report.rows] == [("2026-10-31", Decimal("0.0000000001"))]
    # An offset is converted to UTC: 01:00+02:00 on Nov 1 is 23:00 UTC on Oct 31.
    shifted = reports.period("2026-10-31T22:00:00", "2026-11-01T01:00:00+02:00")
    assert shifted.end == utc(2026, 10, 31, 23)


async def test_active_users_and_cost_per_active_user(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    result = await UsageReports(sessions).active_users(october.principal(), month_label="2026-10")
    assert result.month == "2026-10"
    assert result.active_users == 3  # U1, U2, U3; the call without a user is not a user
    assert result.total_cost == Decimal("7.0500000007")
    assert result.cost_per_active_user == (Decimal("7.0500000007") / 3).quantize(Decimal("1e-10"))
    assert [u.user_id for u in result.users] == [str(U3), str(U1), "", str(U2)]
    empty = await UsageReports(sessions).active_users(october.principal(), month_label="2026-08")
    assert (empty.active_users, empty.total_cost, empty.cost_per_active_user) == (0, 0, 0)


async def test_concentration_of_cost_in_the_top_users(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    service = UsageReports(sessions)
    p = october.principal()
    user_total = Decimal("5.5") + Decimal("1.3000000006") + Decimal("0.0000000001")
    top10 = await service.concentration(p, month_label="2026-10", top_percent=Decimal(10))
    assert (top10.users, top10.top_users) == (3, 1)  # ceil(3 * 10%) = 1
    assert top10.total_cost == user_total
    assert top10.top_cost == Decimal("5.5")
    assert top10.share == (Decimal("5.5") / user_total).quantize(Decimal("0.000001"))
    top50 = await service.concentration(p, month_label="2026-10", top_percent=Decimal(50))
    assert (top50.top_users, top50.top_cost) == (2, Decimal("6.8000000006"))
    every = await service.concentration(p, month_label="2026-10", top_percent=Decimal(100))
    assert every.share == Decimal(1)


def test_concentration_math() -> None:
    costs = [Decimal(i) for i in range(1, 11)]  # 1..10, total 55
    assert concentration_of(costs, Decimal(10)) == (1, Decimal(10), Decimal("0.181818"))
    assert concentration_of(costs, Decimal(20)) == (2, Decimal(19), Decimal("0.345455"))
    assert concentration_of(costs, Decimal("0.1")) == (1, Decimal(10), Decimal("0.181818"))
    assert concentration_of(costs, Decimal(25))[0] == 3  # ceil(2.5)
    assert concentration_of([], Decimal(10)) == (0, Decimal(0), Decimal(0))
    assert concentration_of([Decimal(0)] * 4, Decimal(50)) == (2, Decimal(0), Decimal(0))


async def test_csv_export_parses_and_is_audited(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    from polymodal.db import repositories
    from polymodal.db.scope import tenant_session

    lines = await UsageReports(sessions).export_costs(
        october.principal(), group_by="feature", span=OCTOBER
    )
    rows = list(csv.reader(io.StringIO("".join(lines))))
    assert rows[0] == ["feature", "requests", "tokens_in", "tokens_out", "cost_usd"]
    assert {r[0]: (int(r[1]), Decimal(r[4])) for r in rows[1:]} == {
        "api": (4, Decimal("5.9500000003")),
        "chatbot:c1": (1, Decimal("1.0000000003")),
        "template:blog": (1, Decimal("0.1000000001")),
    }
    async with tenant_session(sessions, october.id) as s:
        events = await repositories.list_audit(s, tenant_id=october.id)
    assert events[0].action == "usage.export" and events[0].data["rows"] == 3


async def test_reports_need_usage_read_and_valid_input(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    service = UsageReports(sessions)
    with pytest.raises(PermissionDenied, match="usage:read"):
        await service.costs(october.principal(Role.VIEWER), group_by="feature", span=OCTOBER)
    with pytest.raises(PermissionDenied):
        await service.active_users(october.principal(Role.MEMBER), month_label=None)
    with pytest.raises(InvalidRequest, match="group_by"):
        await service.costs(october.principal(), group_by="tenant", span=OCTOBER)
    with pytest.raises(InvalidRequest, match="top_percent"):
        await service.concentration(october.principal(), month_label=None, top_percent=Decimal(0))
    with pytest.raises(InvalidRequest, match="month"):
        reports.month("2026-13")
    with pytest.raises(InvalidRequest, match="from"):
        reports.period("yesterday", None)
    with pytest.raises(InvalidRequest, match="before"):
        reports.period("2026-10-02", "2026-10-01")


async def test_raw_events_export_streams_every_row_of_the_period(
    sessions: async_sessionmaker[AsyncSession], october: Tenant
) -> None:
    from polymodal.db import repositories
    from polymodal.db.scope import tenant_session

    service = UsageReports(sessions)
    lines = [line async for line in await service.export_events(october.principal(), span=OCTOBER)]
    table = list(csv.DictReader(io.StringIO("".join(lines))))
    assert list(table[0]) == list(reports.EVENT_COLUMNS)
    assert len(table) == 6  # October only, this tenant only
    assert sum(Decimal(r["cost_usd"]) for r in table) == Decimal("7.0500000007")
    assert [r["created_at"][:10] for r in table] == sorted(r["created_at"][:10] for r in table)
    assert {r["user_id"] for r in table} == {str(U1), str(U2), str(U3), ""}
    assert all(r["event_id"] for r in table)
    async with tenant_session(sessions, october.id) as s:
        newest = (await repositories.list_audit(s, tenant_id=october.id))[0]
    assert (newest.action, newest.target) == ("usage.export", "events")
    with pytest.raises(PermissionDenied):
        await service.export_events(october.principal(Role.VIEWER), span=OCTOBER)
