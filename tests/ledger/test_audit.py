"""The audit chain: verify passes on an untouched log and names the first broken event
after an UPDATE, a DELETE in the middle, or a DELETE of the newest event, on SQLite and
PostgreSQL; concurrent appends never fork the chain; the CLI exits 1 on a break."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Uuid, bindparam, delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from polymodal.cli import app
from polymodal.db import audit_guard, repositories
from polymodal.db.models import AuditEvent
from polymodal.db.models import Tenant as TenantRow
from polymodal.db.scope import system_session, tenant_session
from polymodal.domain.errors import PermissionDenied
from polymodal.domain.principal import Role
from polymodal.tenancy import audit
from tests.conftest import DatabaseTarget
from tests.ledger.conftest import Tenant, new_tenant


async def _log(sessions: async_sessionmaker[AsyncSession], tenant: Tenant, n: int) -> None:
    for i in range(n):
        async with tenant_session(sessions, tenant.id) as s, s.begin():
            await repositories.append_audit(
                s,
                tenant_id=tenant.id,
                actor="user:test",
                action="budget.update" if i % 2 else "key.create",
                target=f"t{i}",
                data={"limit": i * 10, "nested": {"b": [1, 2], "a": "x"}},
                at=datetime.now(UTC),
            )


async def _tamper(sessions: async_sessionmaker[AsyncSession], sql: str, **params: object) -> None:
    """What an attacker with the database owner's rights does: drop the append-only
    triggers, change the log, put the triggers back (outside Row-Level Security)."""
    stmt = text(sql).bindparams(bindparam("t", type_=Uuid))
    async with system_session(sessions) as s, s.begin():
        await s.run_sync(lambda sync: audit_guard.remove(sync.connection()))
        await s.execute(stmt, params)
        await s.run_sync(lambda sync: audit_guard.install(sync.connection()))


async def _verdict(sessions: async_sessionmaker[AsyncSession], tenant: Tenant) -> audit.Verdict:
    return await audit.verify_tenant(sessions, tenant_id=tenant.id, name=tenant.name)


async def test_an_untouched_chain_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    tenant = await new_tenant(sessions)
    empty = await _verdict(sessions, tenant)
    assert empty.ok and empty.events == 0
    await _log(sessions, tenant, 5)
    v = await _verdict(sessions, tenant)
    assert v.ok, v.problem
    assert v.events == 5
    async with tenant_session(sessions, tenant.id) as s:
        newest = (await repositories.list_audit(s, tenant_id=tenant.id))[0]
    assert (newest.seq, newest.hash) == (5, v.head)


async def test_an_updated_row_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 5)
    await _tamper(
        sessions,
        "UPDATE audit_events SET target = 'someone-else' WHERE tenant_id = :t AND seq = 3",
        t=tenant.id,
    )
    v = await _verdict(sessions, tenant)
    assert not v.ok
    assert v.seq == 3 and "modified" in (v.problem or "")
    assert v.events == 2


async def test_a_rehashed_row_breaks_the_next_link(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Changing a row and recomputing its own hash still breaks the chain one later."""
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 4)
    await _tamper(
        sessions,
        "UPDATE audit_events SET hash = :h WHERE tenant_id = :t AND seq = 2",
        h="f" * 64,
        t=tenant.id,
    )
    v = await _verdict(sessions, tenant)
    assert not v.ok and v.seq == 2  # its own contents no longer match
    # Make row 2 self-consistent again with different contents: row 3 breaks.
    async with system_session(sessions) as s:
        row = (
            await s.execute(
                select(AuditEvent.id).where(AuditEvent.tenant_id == tenant.id, AuditEvent.seq == 2)
            )
        ).scalar_one()
    async with system_session(sessions) as s, s.begin():
        await s.run_sync(lambda sync: audit_guard.remove(sync.connection()))
        event = await s.get(AuditEvent, row)
        assert event is not None
        event.target = "forged"
        event.hash = repositories.audit_hash(
            event.prev_hash,
            repositories.audit_fields(
                tenant_id=event.tenant_id,
                actor=event.actor,
                action=event.action,
                target=event.target,
                data=event.data,
                created_at=event.created_at,
            ),
        )
        await s.flush()
        await s.run_sync(lambda sync: audit_guard.install(sync.connection()))
    v = await _verdict(sessions, tenant)
    assert not v.ok and v.seq == 3 and "does not follow" in (v.problem or "")


async def test_a_deleted_row_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 5)
    await _tamper(
        sessions, "DELETE FROM audit_events WHERE tenant_id = :t AND seq = 2", t=tenant.id
    )
    v = await _verdict(sessions, tenant)
    assert not v.ok
    assert v.seq == 2 and "missing" in (v.problem or "")


async def test_deleting_the_newest_row_is_found(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 3)
    await _tamper(
        sessions, "DELETE FROM audit_events WHERE tenant_id = :t AND seq = 3", t=tenant.id
    )
    v = await _verdict(sessions, tenant)
    assert not v.ok
    assert v.seq == 3 and "newest" in (v.problem or "")


@pytest.mark.parametrize("migrated_db", ["postgres"], indirect=True)
async def test_concurrent_appends_do_not_fork_the_chain(
    sessions: async_sessionmaker[AsyncSession], migrated_db: DatabaseTarget
) -> None:
    """PostgreSQL only: SQLite has one writer, so the head row's lock matters here."""
    tenant = await new_tenant(sessions)

    async def one(i: int) -> None:
        async with tenant_session(sessions, tenant.id) as s, s.begin():
            await repositories.append_audit(
                s, tenant_id=tenant.id, actor="a", action="x", target=str(i), at=datetime.now(UTC)
            )

    await asyncio.gather(*(one(i) for i in range(12)))
    v = await _verdict(sessions, tenant)
    assert v.ok, v.problem
    assert v.events == 12


async def test_the_log_is_paged_for_admins_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions)
    other = await new_tenant(sessions)
    await _log(sessions, tenant, 5)
    await _log(sessions, other, 2)
    admin = tenant.principal(Role.ADMIN)
    first = await audit.list_events(sessions, admin, before=None, limit=2)
    assert [e.seq for e in first.events] == [5, 4] and first.next_before == 4
    second = await audit.list_events(sessions, admin, before=first.next_before, limit=2)
    assert [e.seq for e in second.events] == [3, 2]
    last = await audit.list_events(sessions, admin, before=second.next_before, limit=2)
    assert [e.seq for e in last.events] == [1] and last.next_before is None
    with pytest.raises(PermissionDenied, match="audit:read"):
        await audit.list_events(sessions, tenant.principal(Role.DEVELOPER), before=None, limit=2)


def test_cli_verify_prints_ok_or_the_broken_event(
    migrated_db: DatabaseTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polymodal.db.engine import create_engine, session_factory

    settings = migrated_db.settings()
    monkeypatch.setenv("POLYMODAL_DATABASE_URL", settings.database_url)
    if settings.database_schema:
        monkeypatch.setenv("POLYMODAL_DATABASE_SCHEMA", settings.database_schema)
    monkeypatch.setenv("POLYMODAL_DATA_DIR", str(settings.data_dir))

    async def setup() -> Tenant:
        engine = create_engine(settings)
        try:
            sessions = session_factory(engine)
            tenant = await new_tenant(sessions)
            await _log(sessions, tenant, 3)
            return tenant
        finally:
            await engine.dispose()

    tenant = asyncio.run(setup())
    runner = CliRunner()
    ok = runner.invoke(app, ["admin", "audit", "verify", "--tenant", tenant.name])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("OK\t" + tenant.name) and "3 events" in ok.stdout

    async def tamper() -> None:
        engine = create_engine(settings)
        try:
            await _tamper(
                session_factory(engine),
                "UPDATE audit_events SET actor = 'nobody' WHERE tenant_id = :t AND seq = 1",
                t=tenant.id,
            )
        finally:
            await engine.dispose()

    asyncio.run(tamper())
    broken = runner.invoke(app, ["admin", "audit", "verify", "--tenant", str(tenant.id)])
    assert broken.exit_code == 1
    assert "BROKEN" in broken.stdout and "at event 1" in broken.stdout
    missing = runner.invoke(app, ["admin", "audit", "verify", "--tenant", uuid.uuid4().hex])
    assert missing.exit_code == 1 and "no tenant" in missing.output


async def test_the_database_refuses_to_change_or_delete_events(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 2)
    for sql in (
        "UPDATE audit_events SET actor = 'x' WHERE tenant_id = :t",
        "DELETE FROM audit_events WHERE tenant_id = :t",
    ):
        stmt = text(sql).bindparams(bindparam("t", type_=Uuid))
        for scope in (tenant_session(sessions, tenant.id), system_session(sessions)):
            with pytest.raises(DBAPIError, match="append-only"):
                async with scope as s, s.begin():
                    await s.execute(stmt, {"t": tenant.id})
    assert (await _verdict(sessions, tenant)).events == 2


async def test_erasing_a_tenant_still_removes_its_log(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions)
    await _log(sessions, tenant, 3)
    async with system_session(sessions) as s, s.begin():
        await s.execute(delete(TenantRow).where(TenantRow.id == tenant.id))
    async with system_session(sessions) as s:
        left = await s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant_id == tenant.id)
        )
        assert left.scalar_one() == 0
