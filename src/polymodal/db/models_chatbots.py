"""Tables of the RAG chatbots: chatbots (per-tenant configuration), conversations and
their messages. ``tenant_id`` on every row; every index starts with it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from polymodal.db.models import Base, BigIntPK, utcnow


class Chatbot(Base):
    __tablename__ = "chatbots"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # KB ids as strings: a chatbot may answer from several KBs; checked against the
    # tenant's KBs when saved (a deleted KB is reported when the chatbot answers).
    kb_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(16), default="auto")
    tier: Mapped[str] = mapped_column(String(16), default="simple")
    temperature: Mapped[float] = mapped_column(Float, default=0.2)
    top_k: Mapped[int] = mapped_column(Integer, default=5)
    citation_style: Mapped[str] = mapped_column(String(16), default="numeric")
    relevance_threshold: Mapped[float] = mapped_column(Float, default=0.8)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    """A stored conversation with one chatbot. ``summary`` condenses every message up to
    ``summary_upto`` (a message id) once the history passed the token limit."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_tenant_chatbot", "tenant_id", "chatbot_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    chatbot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chatbots.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    title: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    summary_upto: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        Index("ix_chat_messages_tenant_conversation", "tenant_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    # assistant only: [{"n", "kb_id", "doc_id", "title", "page", "chunk_no", ...}]
    citations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # assistant only: model, usage, retrieval cache result, not_in_kb
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
