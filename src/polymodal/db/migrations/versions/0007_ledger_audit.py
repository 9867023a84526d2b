"""ledger and audit: usage cache_hit and event_id (idempotent spool replay), audit seq and
audit heads (gap and tail-deletion detection), append-only triggers on audit_events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from polymodal.db import audit_guard

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(
            sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("event_id", sa.Uuid(), nullable=True))
        batch.create_unique_constraint("uq_usage_events_event_id", ["event_id"])

    # Number the existing audit rows 1, 2, 3... per tenant in id order (their chain order).
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE audit_events SET seq = (SELECT COUNT(*) FROM audit_events AS earlier "
        "WHERE earlier.tenant_id = audit_events.tenant_id AND earlier.id <= audit_events.id)"
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint("uq_audit_events_tenant_seq", ["tenant_id", "seq"])

    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_heads"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_audit_heads_tenant_id_tenants",
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO audit_heads (tenant_id, seq, hash) "
        "SELECT tenant_id, seq, hash FROM audit_events AS last "
        "WHERE last.seq = (SELECT MAX(seq) FROM audit_events AS other "
        "WHERE other.tenant_id = last.tenant_id)"
    )
    # Last: a later rebuild of audit_events on SQLite would drop the triggers.
    audit_guard.install(op.get_bind())


def downgrade() -> None:
    audit_guard.remove(op.get_bind())
    op.drop_table("audit_heads")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_constraint("uq_audit_events_tenant_seq", type_="unique")
        batch.drop_column("seq")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_constraint("uq_usage_events_event_id", type_="unique")
        batch.drop_column("event_id")
        batch.drop_column("cache_hit")
