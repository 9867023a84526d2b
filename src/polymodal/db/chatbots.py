"""Chatbots, conversations and messages. ``tenant_id`` is a required keyword of every
function; functions take an open session and never commit (the service owns the
transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models_chatbots import Chatbot, ChatMessage, Conversation
from polymodal.db.models_rag import KnowledgeBase

# --- knowledge bases (read-only: the chatbot's view of the KB tables) -------------------


async def kb_versions(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Version of each of ``kb_ids`` that the tenant owns (others are simply absent)."""
    if not kb_ids:
        return {}
    rows = await session.execute(
        select(KnowledgeBase.id, KnowledgeBase.version).where(
            KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id.in_(list(kb_ids))
        )
    )
    return {kb_id: int(version) for kb_id, version in rows.all()}


# --- chatbots ---------------------------------------------------------------------------


async def get_chatbot(
    session: AsyncSession, *, tenant_id: uuid.UUID, chatbot_id: uuid.UUID
) -> Chatbot | None:
    return (
        await session.execute(
            select(Chatbot).where(Chatbot.tenant_id == tenant_id, Chatbot.id == chatbot_id)
        )
    ).scalar_one_or_none()


async def list_chatbots(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[Chatbot]:
    result = await session.execute(
        select(Chatbot).where(Chatbot.tenant_id == tenant_id).order_by(Chatbot.created_at)
    )
    return list(result.scalars())


async def name_taken(
    session: AsyncSession, *, tenant_id: uuid.UUID, name: str, other_than: uuid.UUID | None
) -> bool:
    query = select(Chatbot.id).where(Chatbot.tenant_id == tenant_id, Chatbot.name == name)
    if other_than is not None:
        query = query.where(Chatbot.id != other_than)
    return (await session.execute(query)).first() is not None


async def delete_chatbot(
    session: AsyncSession, *, tenant_id: uuid.UUID, chatbot_id: uuid.UUID
) -> bool:
    # Conversations and messages go by ON DELETE CASCADE; explicit deletes first keep
    # SQLite (foreign keys may be off there) as clean as PostgreSQL.
    convs = select(Conversation.id).where(
        Conversation.tenant_id == tenant_id, Conversation.chatbot_id == chatbot_id
    )
    await session.execute(
        delete(ChatMessage).where(
            ChatMessage.tenant_id == tenant_id, ChatMessage.conversation_id.in_(convs)
        )
    )
    await session.execute(
        delete(Conversation).where(
            Conversation.tenant_id == tenant_id, Conversation.chatbot_id == chatbot_id
        )
    )
    result = await session.execute(
        delete(Chatbot).where(Chatbot.tenant_id == tenant_id, Chatbot.id == chatbot_id)
    )
    return bool(getattr(result, "rowcount", 0))


# --- conversations ----------------------------------------------------------------------


async def get_conversation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    chatbot_id: uuid.UUID,
    conversation_id: uuid.UUID,
    for_update: bool = False,
) -> Conversation | None:
    query = select(Conversation).where(
        Conversation.tenant_id == tenant_id,
        Conversation.chatbot_id == chatbot_id,
        Conversation.id == conversation_id,
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def list_conversations(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    chatbot_id: uuid.UUID,
    limit: int,
    offset: int,
) -> tuple[list[tuple[Conversation, int]], int]:
    """A page of conversations, newest first, each with its message count; and the total."""
    where = (Conversation.tenant_id == tenant_id, Conversation.chatbot_id == chatbot_id)
    counts = (
        select(ChatMessage.conversation_id, func.count().label("n"))
        .where(ChatMessage.tenant_id == tenant_id)
        .group_by(ChatMessage.conversation_id)
        .subquery()
    )
    rows = await session.execute(
        select(Conversation, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.conversation_id == Conversation.id)
        .where(*where)
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .limit(limit)
        .offset(offset)
    )
    total = (await session.execute(select(func.count()).where(*where))).scalar_one()
    return [(c, int(n)) for c, n in rows.all()], int(total)


async def delete_conversation(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    chatbot_id: uuid.UUID,
    conversation_id: uuid.UUID,
) -> bool:
    found = await get_conversation(
        session, tenant_id=tenant_id, chatbot_id=chatbot_id, conversation_id=conversation_id
    )
    if found is None:
        return False
    await session.execute(
        delete(ChatMessage).where(
            ChatMessage.tenant_id == tenant_id, ChatMessage.conversation_id == conversation_id
        )
    )
    await session.delete(found)
    return True


# --- messages ---------------------------------------------------------------------------


async def messages(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    after_id: int = 0,
) -> list[ChatMessage]:
    """Messages in order (those with id > ``after_id``)."""
    result = await session.execute(
        select(ChatMessage)
        .where(
            ChatMessage.tenant_id == tenant_id,
            ChatMessage.conversation_id == conversation_id,
            ChatMessage.id > after_id,
        )
        .order_by(ChatMessage.id)
    )
    return list(result.scalars())
