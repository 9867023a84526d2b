"""Row-Level Security for migrations: the second line of tenant isolation.

Use from an Alembic migration that creates a tenant-owned table::

    from polymodal.db.rls import disable_tenant_rls, enable_tenant_rls

    def upgrade() -> None:
        op.create_table("knowledge_bases", ...)
        enable_tenant_rls("knowledge_bases")

    def downgrade() -> None:
        disable_tenant_rls("knowledge_bases")
        op.drop_table("knowledge_bases")

`enable_tenant_rls` turns RLS on *and forces it* (so the table's owner is held too) and
adds one policy, ``tenant_isolation``: a row is visible, and may be written, only when
its ``tenant_id`` equals the transaction's ``app.tenant_id`` (set by
`polymodal.db.scope.tenant_session`). With no tenant set the comparison is NULL, so a
session that forgot its tenant sees nothing and can write nothing. Grants for the
application role come from the default privileges migration 0008 sets on the schema, so
a later table needs no grant of its own. Every helper is a no-op on SQLite (the embedded,
single-process profile has no roles).

`tests/isolation` fails when any table with a ``tenant_id`` column lacks the policy, so a
new tenant table without this call does not get through CI.
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

POLICY = "tenant_isolation"
TENANT_SETTING = "app.tenant_id"
DEFAULT_APP_ROLE = "polymodal_app"
# Unset and '' (what a transaction-local setting reverts to) both mean "no tenant".
CURRENT_TENANT = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid"
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Roles are per cluster, so another database's migration may race this one.
_CREATE_ROLE = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ':literal'
             AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role :literal can bypass row-level security; it cannot be the '
                    'application role (POLYMODAL_DATABASE_RLS_ROLE)';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ':literal') THEN
    BEGIN
      CREATE ROLE :quoted NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
  IF NOT pg_has_role(current_user, ':literal', 'MEMBER') THEN
    EXECUTE format('GRANT %I TO %I', ':literal', current_user);
  END IF;
END $$
"""


def _bind() -> Connection | None:
    bind = op.get_bind()
    return bind if bind.dialect.name == "postgresql" else None


def _quote(bind: Connection, name: str) -> str:
    return bind.dialect.identifier_preparer.quote(name)


def enable_tenant_rls(table: str, *, column: str = "tenant_id") -> None:
    """Confine ``table`` to the current tenant: ENABLE + FORCE RLS and the policy on
    ``column`` (``tenant_id``; the ``tenants`` table itself uses ``id``)."""
    bind = _bind()
    if bind is None:
        return
    t, c = _quote(bind, table), _quote(bind, column)
    op.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {t}")
    op.execute(
        f"CREATE POLICY {POLICY} ON {t} USING ({c} = {CURRENT_TENANT}) "
        f"WITH CHECK ({c} = {CURRENT_TENANT})"
    )


def disable_tenant_rls(table: str) -> None:
    """Undo `enable_tenant_rls` (for a migration's downgrade)."""
    bind = _bind()
    if bind is None:
        return
    t = _quote(bind, table)
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {t}")
    op.execute(f"ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {t} DISABLE ROW LEVEL SECURITY")


def tenant_tables() -> list[tuple[str, str]]:
    """(table, column) for every table of the current schema that a tenant owns: each
    table with a ``tenant_id`` column, and ``tenants`` itself on ``id``."""
    bind = _bind()
    if bind is None:
        return []
    rows = bind.execute(
        text(
            "SELECT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t "
            "  ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' "
            "  AND t.table_type = 'BASE TABLE' ORDER BY c.table_name"
        )
    )
    found = [(str(r[0]), "tenant_id") for r in rows]
    has_tenants = bind.execute(
        text(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = 'tenants'"
        )
    ).first()
    return ([("tenants", "id")] if has_tenants else []) + found


def create_app_role(role: str) -> None:
    """Create the application role (once per cluster; roles are not per database) and
    let the migrating user switch to it. An existing role that could bypass RLS is
    refused rather than used."""
    bind = _bind()
    if bind is None or not role:
        return
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"{role!r} is not a plain role name (a-z, 0-9, _)")
    r, literal = _quote(bind, role), role  # safe to inline: checked just above
    op.execute(_CREATE_ROLE.replace(":quoted", r).replace(":literal", literal))


def grant_app_role(role: str) -> None:
    """Let ``role`` use the current schema's tables and sequences, now and later."""
    bind = _bind()
    if bind is None or not role:
        return
    r = _quote(bind, role)
    schema = _quote(bind, str(bind.execute(text("SELECT current_schema()")).scalar_one()))
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {r}")
    op.execute(f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {schema} TO {r}")
    op.execute(f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {schema} TO {r}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {TABLE_PRIVILEGES} ON TABLES TO {r}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT {SEQUENCE_PRIVILEGES} ON SEQUENCES TO {r}"
    )


def revoke_app_role(role: str) -> None:
    """Undo `grant_app_role` (the role itself stays: other databases may use it)."""
    bind = _bind()
    if bind is None or not role:
        return
    exists = bind.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if exists is None:
        return
    r = _quote(bind, role)
    schema = _quote(bind, str(bind.execute(text("SELECT current_schema()")).scalar_one()))
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"REVOKE {SEQUENCE_PRIVILEGES} ON SEQUENCES FROM {r}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE {TABLE_PRIVILEGES} ON TABLES FROM {r}"
    )
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {r}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {r}")
    op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {r}")


def app_role() -> str:
    """The role name handed to the migration by `polymodal.db.migrate` (from the
    ``database_rls_role`` setting); the default when run some other way."""
    config = op.get_context().config
    value = (
        DEFAULT_APP_ROLE if config is None else config.attributes.get("rls_role", DEFAULT_APP_ROLE)
    )
    return str(value or "")
