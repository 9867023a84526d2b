"""limits and budgets: plan overrides, budgets and reservations (tenancy issue)

Rate-limit overrides per tenant or key, monthly budgets per tenant or key, and the stored
flags of budget alerts. Live counters and reservations are in Redis (or in-process).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from polymodal.db.models import BigIntPK, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def _key_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["key_id"], ["api_keys.id"], name=f"fk_{table}_key_id_api_keys", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "rate_limit_overrides",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(40), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_minute", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rate_limit_overrides"),
        _tenant_fk("rate_limit_overrides"),
        _key_fk("rate_limit_overrides"),
        sa.UniqueConstraint("tenant_id", "subject", name="uq_rate_limit_overrides_tenant_id"),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(40), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("monthly_limit_usd", sa.Numeric(20, 6), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("alert_thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        _tenant_fk("budgets"),
        _key_fk("budgets"),
        sa.UniqueConstraint("tenant_id", "subject", name="uq_budgets_tenant_id"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(40), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("spent_usd", sa.Numeric(20, 10), nullable=False),
        sa.Column("limit_usd", sa.Numeric(20, 6), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budget_alerts"),
        _tenant_fk("budget_alerts"),
        sa.UniqueConstraint(
            "tenant_id", "subject", "month", "threshold", name="uq_budget_alerts_tenant_id"
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("budgets")
    op.drop_table("rate_limit_overrides")
