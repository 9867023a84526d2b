"""Tables of knowledge bases (RAG): knowledge bases, their documents, the documents'
extracted text, and ingestion jobs.

The vectors live in Qdrant (rag/index.py); these rows are the source of truth for what
exists and what state ingestion is in. Every table is tenant-owned.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from polymodal.db.models import Base, utcnow


class KnowledgeBase(Base):
    """A tenant's collection of documents, embedded with one model chosen at creation.

    ``version`` goes up whenever the content changes (a document becomes searchable,
    is replaced or deleted), so caches keyed on it (the semantic query cache) expire."""

    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    embedding_model: Mapped[str] = mapped_column(String(100))  # a deployment id
    dimensions: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbDocument(Base):
    """One document of a knowledge base. ``source`` (file name or URL) identifies it
    within the KB: uploading the same source again replaces the document's chunks."""

    __tablename__ = "kb_documents"
    __table_args__ = (
        UniqueConstraint("kb_id", "source"),
        Index("ix_kb_documents_tenant_kb", "tenant_id", "kb_id"),
        Index("ix_kb_documents_kb_hash", "kb_id", "content_hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kb_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(String(2048))
    source_kind: Mapped[str] = mapped_column(String(16))  # upload | url
    format: Mapped[str] = mapped_column(String(16))  # txt md html pdf docx csv json
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the extracted text
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    chars: Mapped[int] = mapped_column(Integer, default=0)
    # queued | processing | ready | failed (mirrors its latest ingestion job)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbDocumentText(Base):
    """The extracted text of a document, kept so ingestion can run (and re-run) from the
    job id alone. ``sections``: ``[{"text", "page", "section"}, ...]``."""

    __tablename__ = "kb_document_texts"
    __table_args__ = (Index("ix_kb_document_texts_tenant", "tenant_id", "doc_id"),)

    doc_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("kb_documents.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class IngestJob(Base):
    """One ingestion of one document version. The row, not the broker, says what happened:
    Celery (or the in-process runner) carries only the id; a worker that dies leaves a
    ``running`` row whose heartbeat goes stale, and the next attempt takes it over and
    resumes after ``chunks_done``."""

    __tablename__ = "kb_ingest_jobs"
    __table_args__ = (
        Index("ix_kb_ingest_jobs_tenant_doc", "tenant_id", "doc_id"),
        Index("ix_kb_ingest_jobs_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kb_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    doc_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    # queued | running | done | failed | superseded
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
