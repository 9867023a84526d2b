"""chatbots, conversations, messages (RAG issue)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from polymodal.db.models import BigIntPK, UTCDateTime
from polymodal.db.rls import disable_tenant_rls, enable_tenant_rls

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("chatbots", "conversations", "chat_messages")


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "chatbots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kb_ids", sa.JSON(), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("citation_style", sa.String(16), nullable=False),
        sa.Column("relevance_threshold", sa.Float(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chatbots"),
        _tenant_fk("chatbots"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_chatbots_tenant_id"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("chatbot_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("summary_upto", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        _tenant_fk("conversations"),
        sa.ForeignKeyConstraint(
            ["chatbot_id"],
            ["chatbots.id"],
            name="fk_conversations_chatbot_id_chatbots",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_conversations_tenant_chatbot", "conversations", ["tenant_id", "chatbot_id"])
    op.create_table(
        "chat_messages",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        _tenant_fk("chat_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_chat_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_chat_messages_tenant_conversation",
        "chat_messages",
        ["tenant_id", "conversation_id", "id"],
    )
    for table in TABLES:
        enable_tenant_rls(table)


def downgrade() -> None:
    for table in reversed(TABLES):
        disable_tenant_rls(table)
    op.drop_index("ix_chat_messages_tenant_conversation", table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("ix_conversations_tenant_chatbot", table_name="conversations")
    op.drop_table("conversations")
    op.drop_table("chatbots")
