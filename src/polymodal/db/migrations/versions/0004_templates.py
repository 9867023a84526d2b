"""templates: tenant custom templates with versions, hidden built-in templates

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from polymodal.db.models import BigIntPK, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "custom_templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.String(100), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("overrides_builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custom_templates"),
        _tenant_fk("custom_templates"),
        sa.UniqueConstraint("tenant_id", "template_id", name="uq_custom_templates_tenant_id"),
    )
    op.create_table(
        "custom_template_versions",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("custom_template_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custom_template_versions"),
        sa.ForeignKeyConstraint(
            ["custom_template_id"],
            ["custom_templates.id"],
            name="fk_custom_template_versions_custom_template_id_custom_templates",
            ondelete="CASCADE",
        ),
        _tenant_fk("custom_template_versions"),
        sa.UniqueConstraint(
            "custom_template_id",
            "version",
            name="uq_custom_template_versions_custom_template_id",
        ),
    )
    op.create_table(
        "hidden_templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.String(100), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hidden_templates"),
        _tenant_fk("hidden_templates"),
        sa.UniqueConstraint("tenant_id", "template_id", name="uq_hidden_templates_tenant_id"),
    )


def downgrade() -> None:
    op.drop_table("hidden_templates")
    op.drop_table("custom_template_versions")
    op.drop_table("custom_templates")
