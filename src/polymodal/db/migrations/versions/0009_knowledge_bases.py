"""knowledge bases, documents, ingestion jobs (RAG issue)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from polymodal.db.models import UTCDateTime
from polymodal.db.rls import disable_tenant_rls, enable_tenant_rls

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("knowledge_bases", "kb_documents", "kb_document_texts", "kb_ingest_jobs")


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=f"fk_{table}_tenant_id_tenants", ondelete="CASCADE"
    )


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "knowledge_bases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False),
        sa.Column("embedding_model", sa.String(100), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_knowledge_bases"),
        _tenant_fk("knowledge_bases"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_knowledge_bases_tenant_id"),
    )
    op.create_table(
        "kb_documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kb_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_documents"),
        _tenant_fk("kb_documents"),
        _fk("kb_documents", "kb_id", "knowledge_bases"),
        sa.UniqueConstraint("kb_id", "source", name="uq_kb_documents_kb_id"),
    )
    op.create_index("ix_kb_documents_tenant_kb", "kb_documents", ["tenant_id", "kb_id"])
    op.create_index("ix_kb_documents_kb_hash", "kb_documents", ["kb_id", "content_hash"])
    op.create_table(
        "kb_document_texts",
        sa.Column("doc_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("doc_id", name="pk_kb_document_texts"),
        _tenant_fk("kb_document_texts"),
        _fk("kb_document_texts", "doc_id", "kb_documents"),
    )
    op.create_index("ix_kb_document_texts_tenant", "kb_document_texts", ["tenant_id", "doc_id"])
    op.create_table(
        "kb_ingest_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kb_id", sa.Uuid(), nullable=False),
        sa.Column("doc_id", sa.Uuid(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kb_ingest_jobs"),
        _tenant_fk("kb_ingest_jobs"),
        _fk("kb_ingest_jobs", "kb_id", "knowledge_bases"),
        _fk("kb_ingest_jobs", "doc_id", "kb_documents"),
    )
    op.create_index("ix_kb_ingest_jobs_tenant_doc", "kb_ingest_jobs", ["tenant_id", "doc_id"])
    op.create_index("ix_kb_ingest_jobs_status", "kb_ingest_jobs", ["status"])
    for table in TABLES:
        enable_tenant_rls(table)


def downgrade() -> None:
    for table in reversed(TABLES):
        disable_tenant_rls(table)
    op.drop_table("kb_ingest_jobs")
    op.drop_table("kb_document_texts")
    op.drop_table("kb_documents")
    op.drop_table("knowledge_bases")
