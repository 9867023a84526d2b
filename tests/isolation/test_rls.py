"""The second line: PostgreSQL Row-Level Security, as the application's own role.

Queries here are raw SQL *without* a tenant filter, run on an engine built exactly like
the server's, so the only thing keeping tenant B's rows out is the database itself.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from polymodal.db import migrate as migrations
from polymodal.db import rls_status
from polymodal.db.engine import create_engine, session_factory
from polymodal.db.rls import POLICY
from polymodal.db.scope import RlsRoleMissing, system_session, tenant_session
from tests.conftest import PG_URL, DatabaseTarget, need_service
from tests.isolation.conftest import IsoEnv, template_definition

# Tables every deployment has from the foundation on; the enumeration below must find
# at least these (so an empty enumeration cannot pass).
KNOWN_TENANT_TABLES = {
    "tenants",
    "memberships",
    "api_keys",
    "audit_events",
    "usage_events",
    "custom_templates",
    "custom_template_versions",
    "hidden_templates",
}


async def tenant_tables(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    """{table: tenant column} for every base table of the schema a tenant owns."""
    async with system_session(sessions) as s:
        rows = await s.execute(
            text(
                "SELECT c.table_name FROM information_schema.columns c "
                "JOIN information_schema.tables t "
                "  ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                "WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' "
                "  AND t.table_type = 'BASE TABLE'"
            )
        )
        found = {str(r[0]): "tenant_id" for r in rows}
    return {"tenants": "id", **found}


async def _seed_templates(env: IsoEnv) -> None:
    """A custom template and a hidden built-in in each tenant (rows in three tables)."""
    for tenant in (env.a, env.b):
        with env.client(tenant.owner_key) as c:
            r = c.post(
                "/v1/templates/custom",
                json={"template": template_definition(f"rls-{uuid.uuid4().hex[:6]}")},
            )
            assert r.status_code == 201, r.text
            r = c.put("/v1/templates/press-release/hidden")
            assert r.status_code in (200, 204), r.text
            assert c.post("/v1/chat/completions", json=_chat()).status_code == 200
    env.server.call(env.server.state.usage.flush())


def _chat() -> dict[str, object]:
    return {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


async def test_app_connections_run_as_a_role_that_cannot_bypass_rls(iso: IsoEnv) -> None:
    async with iso.sessions() as sessions, sessions() as s:
        row = (
            await s.execute(
                text(
                    "SELECT current_user, session_user, r.rolsuper, r.rolbypassrls "
                    "FROM pg_roles r WHERE r.rolname = current_user"
                )
            )
        ).one()
    assert row[0] == iso.settings.database_rls_role == "polymodal_app"
    assert row[1] != row[0]  # the URL's user (a superuser here) is not who queries run as
    assert row[2] is False and row[3] is False


async def test_every_tenant_table_has_forced_rls_and_the_policy(iso: IsoEnv) -> None:
    async with iso.sessions() as sessions:
        tables = await tenant_tables(sessions)
        assert tables.keys() >= KNOWN_TENANT_TABLES
        async with system_session(sessions) as s:
            rows = await s.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, p.qual, "
                    "       p.with_check, p.cmd "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "LEFT JOIN pg_policies p ON p.schemaname = n.nspname "
                    "  AND p.tablename = c.relname AND p.policyname = :policy "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                ),
                {"policy": POLICY},
            )
            state = {str(r[0]): r[1:] for r in rows}
    problems = []
    for table, column in sorted(tables.items()):
        enabled, forced, qual, check, cmd = state[table]
        expected = (
            f"({column} = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"
        )
        if not (enabled and forced):
            problems.append(f"{table}: RLS enabled={enabled} forced={forced}")
        elif qual != expected or check != expected or cmd != "ALL":
            problems.append(f"{table}: policy {POLICY} is {cmd} USING {qual} CHECK {check}")
    assert not problems, (
        "tables without tenant RLS (call polymodal.db.rls.enable_tenant_rls "
        "in the table's migration):\n" + "\n".join(problems)
    )


async def test_unfiltered_queries_see_only_the_sessions_tenant(iso: IsoEnv) -> None:
    await _seed_templates(iso)
    async with iso.sessions() as sessions:
        tables = await tenant_tables(sessions)
        populated = set()
        for table, column in sorted(tables.items()):
            col = f'"{column}"'
            async with system_session(sessions) as s:
                counts = {
                    t.id: (
                        await s.execute(
                            text(f'SELECT count(*) FROM "{table}" WHERE {col} = :t'), {"t": t.id}
                        )
                    ).scalar_one()
                    for t in (iso.a, iso.b)
                }
            if all(counts.values()):
                populated.add(table)
            for tenant in (iso.a, iso.b):
                async with tenant_session(sessions, tenant.id) as s:
                    seen = (await s.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one()
                    foreign = (
                        await s.execute(
                            text(f'SELECT count(*) FROM "{table}" WHERE {col} <> :t'),
                            {"t": tenant.id},
                        )
                    ).scalar_one()
                assert (table, seen, foreign) == (table, counts[tenant.id], 0)
            async with sessions() as s:  # no tenant set: nothing at all
                none = (await s.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one()
            assert (table, none) == (table, 0)
    # The check above is only as good as the rows it ran over.
    assert populated >= KNOWN_TENANT_TABLES


async def test_writing_another_tenants_row_is_refused(iso: IsoEnv) -> None:
    async with iso.sessions() as sessions:
        async with tenant_session(sessions, iso.a.id) as s:
            with pytest.raises(DBAPIError, match="row-level security"):
                async with s.begin():
                    await s.execute(
                        text(
                            "INSERT INTO hidden_templates (id, tenant_id, template_id, created_at) "
                            "VALUES (:id, :t, 'blog-post', now())"
                        ),
                        {"id": uuid.uuid4(), "t": iso.b.id},
                    )
        # Moving A's own row to B is refused too (WITH CHECK on UPDATE).
        async with tenant_session(sessions, iso.a.id) as s:
            with pytest.raises(DBAPIError, match="row-level security"):
                async with s.begin():
                    await s.execute(
                        text("UPDATE api_keys SET tenant_id = :b WHERE tenant_id = :a"),
                        {"a": iso.a.id, "b": iso.b.id},
                    )
        # Updating or deleting B's rows from A's session touches nothing.
        async with tenant_session(sessions, iso.a.id) as s, s.begin():
            changed = await s.execute(
                text("UPDATE api_keys SET name = 'taken' WHERE tenant_id = :b"), {"b": iso.b.id}
            )
            deleted = await s.execute(
                text("DELETE FROM memberships WHERE tenant_id = :b"), {"b": iso.b.id}
            )
            assert (changed.rowcount, deleted.rowcount) == (0, 0)  # type: ignore[attr-defined]
        async with system_session(sessions) as s:
            names = (
                await s.execute(
                    text("SELECT name FROM api_keys WHERE tenant_id = :b"), {"b": iso.b.id}
                )
            ).scalars()
            assert "taken" not in set(names)


async def test_the_tenant_setting_does_not_outlive_its_transaction(iso: IsoEnv) -> None:
    """A pooled connection that served tenant A serves the next session with no tenant."""
    async with iso.sessions() as sessions:
        async with tenant_session(sessions, iso.a.id) as s:
            assert (await s.execute(text("SELECT count(*) FROM tenants"))).scalar_one() == 1
            await s.commit()
            # A new transaction on the same session sets the tenant again.
            assert (await s.execute(text("SELECT count(*) FROM tenants"))).scalar_one() == 1
        async with sessions() as s:
            assert (await s.execute(text("SELECT count(*) FROM tenants"))).scalar_one() == 0
            user = (await s.execute(text("SELECT current_user"))).scalar_one()
        assert user == "polymodal_app"


async def test_a_system_session_leaves_the_role_only_for_its_transaction(iso: IsoEnv) -> None:
    async with iso.sessions() as sessions:
        async with system_session(sessions) as s:
            assert (await s.execute(text("SELECT count(*) FROM tenants"))).scalar_one() >= 2
            assert (await s.execute(text("SELECT current_user"))).scalar_one() != "polymodal_app"
        async with sessions() as s:
            assert (await s.execute(text("SELECT current_user"))).scalar_one() == "polymodal_app"


async def test_doctor_says_whether_rls_holds(iso: IsoEnv) -> None:
    def engine_for(**overrides: object) -> AsyncEngine:
        return create_engine(iso.settings.model_copy(update=overrides))

    checks = [
        ({}, "RLS enforced"),
        ({"database_rls_role": ""}, "unconfined"),
    ]
    for overrides, expected in checks:
        engine = engine_for(**overrides)
        try:
            assert expected in await rls_status.describe(engine)
        finally:
            await engine.dispose()
    engine = engine_for(database_rls_role="polymodal_no_such_role")
    try:
        with pytest.raises(rls_status.IsolationProblem, match="polymodal migrate"):
            await rls_status.describe(engine)
    finally:
        await engine.dispose()


async def test_a_missing_role_fails_closed(iso: IsoEnv) -> None:
    """Restored without its roles, say: tenant sessions refuse rather than run as the
    URL's (bypassing) user."""
    engine = create_engine(iso.settings.model_copy(update={"database_rls_role": "pm_gone"}))
    try:
        sessions = session_factory(engine)
        with pytest.raises(RlsRoleMissing, match="polymodal migrate"):
            async with tenant_session(sessions, iso.a.id) as s:
                await s.execute(text("SELECT 1"))
        with pytest.raises(RlsRoleMissing):
            async with sessions() as s:
                await s.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def test_first_migration_creates_the_role_and_confines_the_same_engine(
    tmp_path: Path,
) -> None:
    """A fresh cluster: the role does not exist when the engine's first connection opens;
    after `upgrade` every session of that same engine runs as the new role."""
    need_service("PostgreSQL", PG_URL, 5432)
    role = f"pm_fresh_{uuid.uuid4().hex[:8]}"
    target = DatabaseTarget("postgres", tmp_path)
    await target.create()
    engine = create_engine(target.settings(database_rls_role=role))
    try:
        await migrations.upgrade(engine)
        sessions = session_factory(engine)
        async with tenant_session(sessions, uuid.uuid4()) as s:
            who = (await s.execute(text("SELECT current_user"))).scalar_one()
            seen = (await s.execute(text("SELECT count(*) FROM tenants"))).scalar_one()
        assert (who, seen) == (role, 0)
        async with system_session(sessions) as s:
            flags = (
                await s.execute(
                    text(
                        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles "
                        "WHERE rolname = :r"
                    ),
                    {"r": role},
                )
            ).one()
        assert tuple(flags) == (False, False, False)
    finally:
        await engine.dispose()
        await target.drop()
        admin_engine = create_engine(target.settings(database_rls_role=""))
        async with admin_engine.begin() as conn:
            await conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        await admin_engine.dispose()
