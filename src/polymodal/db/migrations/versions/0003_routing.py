"""routing: tenant routing policy; tier, task and attempts on usage rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("tier", sa.String(16), nullable=True))
        batch.add_column(sa.Column("task", sa.String(32), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("attempts")
        batch.drop_column("task")
        batch.drop_column("tier")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("policy")
