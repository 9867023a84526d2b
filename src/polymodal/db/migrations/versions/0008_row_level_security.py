"""row-level security on every tenant table (tenancy issue)

Every table that has a ``tenant_id`` column at this point (and ``tenants`` itself, on
``id``) gets RLS enabled and forced with the ``tenant_isolation`` policy; the
application role (``database_rls_role``, default ``polymodal_app``) is created if
missing, without SUPERUSER or BYPASSRLS, and granted the schema's tables and sequences,
including those later migrations create. Tables added after this revision call
`polymodal.db.rls.enable_tenant_rls` in their own migration.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from polymodal.db import rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, column in rls.tenant_tables():
        rls.enable_tenant_rls(table, column=column)
    role = rls.app_role()
    rls.create_app_role(role)
    rls.grant_app_role(role)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    rls.revoke_app_role(rls.app_role())
    rows = bind.execute(
        text(
            "SELECT tablename FROM pg_policies "
            "WHERE schemaname = current_schema() AND policyname = :p"
        ),
        {"p": rls.POLICY},
    )
    for (table,) in rows.all():
        rls.disable_tenant_rls(str(table))
