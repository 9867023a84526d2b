"""Chatbots, conversations and turns on SQLite and on PostgreSQL (Row-Level Security on):
the service against the real database, a scripted model behind the caller protocol."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import chatbots as repo
from polymodal.db.models_rag import KnowledgeBase
from polymodal.db.scope import tenant_session
from polymodal.domain.chat import ChatChunk, ChatCompletion, ChatRequest
from polymodal.domain.errors import NotFound
from polymodal.domain.principal import Principal, Role
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.chatbot_reply import ChatbotReplies, ReplySettings
from polymodal.rag.chatbots import ChatbotSpec, ChatbotStore
from polymodal.rag.semantic_cache import MemoryVectorStore, SemanticCache
from polymodal.tenancy import admin
from tests.chatbots.support import WordRetriever


class ScriptedModel:
    """The gateway boundary with canned answers (the gateway itself is tested elsewhere)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []

    async def chat(self, feature: str, request: ChatRequest) -> tuple[ChatCompletion, None]:
        self.requests.append(request)
        text = self.answers.pop(0)
        completion: ChatCompletion = {
            "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
        }  # fmt: skip
        return completion, None

    async def chat_stream(
        self, feature: str, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], None]:
        raise NotImplementedError

    async def embed_query(self, text: str, *, feature: str) -> list[float]:
        # Orthogonal one-hot vectors by text: only identical questions are "similar".
        vector = [0.0] * 64
        vector[hash(text) % 64] = 1.0
        return vector


async def _tenant(sessions: async_sessionmaker[AsyncSession]) -> tuple[Principal, uuid.UUID]:
    tenant = await admin.create_tenant(sessions, name=f"bots-{uuid.uuid4().hex[:8]}", actor="t")
    async with tenant_session(sessions, tenant.id) as s, s.begin():
        kb = KnowledgeBase(
            tenant_id=tenant.id, name="kb", embedding_model="local-e5-small", dimensions=384
        )
        s.add(kb)
    principal = Principal(tenant.id, uuid.uuid4(), frozenset({Role.DEVELOPER}))
    return principal, kb.id


@pytest.fixture
def service(sessions: async_sessionmaker[AsyncSession]) -> tuple[ChatbotReplies, WordRetriever]:
    retriever = WordRetriever()
    store = ChatbotStore(sessions=sessions, default_top_k=5, default_relevance_threshold=0.2)
    search = CachedSearch(
        retriever=retriever,
        cache=SemanticCache(MemoryVectorStore(max_entries=10, ttl_s=60), threshold=0.92),
    )
    settings = ReplySettings(
        history_messages=2, summary_trigger_tokens=15, summary_tier="simple",
        max_message_chars=1000,
    )  # fmt: skip
    return ChatbotReplies(
        store=store, search=search, count_tokens=lambda t: len(t.split()), settings=settings
    ), retriever


async def test_turns_are_stored_and_summarised(
    sessions: async_sessionmaker[AsyncSession], service: tuple[ChatbotReplies, WordRetriever]
) -> None:
    replies, retriever = service
    me, kb = await _tenant(sessions)
    retriever.add(me.tenant_id, kb, title="Opening", text="The shop opens at nine every day.")
    bot = await replies.store.create(me, ChatbotSpec(name="shop", kb_ids=[kb]))
    conv = await replies.store.create_conversation(me, bot.id)
    model = ScriptedModel("It opens at nine [1].", "Every day [1].", "SUMMARY", "Still nine [1].")
    questions = ["When does the shop open?", "Does the shop open every day?",
                 "And when does the shop open on Sunday?"]  # fmt: skip
    for q in questions:
        p = await replies.prepare(me, bot.id, content=q, caller=model, conversation_id=conv.id)
        done = await replies.reply(me, p, model)
        assert done.citations[0]["cited"] and done.citations[0]["title"] == "Opening"
    stored = await replies.store.get_conversation(me, bot.id, conv.id)
    assert [m.role for m in stored.messages] == ["user", "assistant"] * 3
    assert [m.id for m in stored.messages] == sorted(m.id for m in stored.messages)
    assert stored.summary == "SUMMARY"  # 4 messages of history passed 15 tokens
    last = model.requests[-1].messages
    assert "Summary of the earlier conversation:\nSUMMARY" in str(last[0].get("content"))
    assert [m.get("content") for m in last[1:]] == [questions[1], "Every day [1].", questions[2]]


async def test_another_tenant_sees_nothing(
    sessions: async_sessionmaker[AsyncSession], service: tuple[ChatbotReplies, WordRetriever]
) -> None:
    replies, _ = service
    a, kb_a = await _tenant(sessions)
    b, _ = await _tenant(sessions)
    bot = await replies.store.create(a, ChatbotSpec(name="a-bot", kb_ids=[kb_a]))
    conv = await replies.store.create_conversation(a, bot.id)
    with pytest.raises(NotFound):
        await replies.store.get(b, bot.id)
    with pytest.raises(NotFound):
        await replies.store.get_conversation(b, bot.id, conv.id)
    with pytest.raises(NotFound) as raised:
        await replies.store.create(b, ChatbotSpec(name="b-bot", kb_ids=[kb_a]))
    assert str(kb_a) in raised.value.message
    assert await replies.store.list_all(b) == []
    async with tenant_session(sessions, b.tenant_id) as s:
        assert await repo.get_chatbot(s, tenant_id=b.tenant_id, chatbot_id=bot.id) is None
        assert await repo.kb_versions(s, tenant_id=b.tenant_id, kb_ids=[kb_a]) == {}
    # Deleting a chatbot takes its conversations and messages with it.
    await replies.store.delete(a, bot.id)
    async with tenant_session(sessions, a.tenant_id) as s:
        rows: list[Any] = await repo.messages(s, tenant_id=a.tenant_id, conversation_id=conv.id)
        assert rows == []
