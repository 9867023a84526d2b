"""A chatbot answers: retrieve (through the semantic query cache), judge relevance,
assemble the numbered sources and the conversation's memory, call the model through the
gateway with ``feature=chatbot:<id>``, map the [n] citations back to documents, and
store the turn.

A turn is stored only when the answer is complete (user and assistant message in one
transaction): a failed or abandoned stream leaves the conversation as it was.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from polymodal.db import chatbots as repo
from polymodal.db.models import utcnow
from polymodal.db.models_chatbots import ChatMessage
from polymodal.db.scope import tenant_session
from polymodal.domain.chat import ChatRequest, Message
from polymodal.domain.errors import (
    Conflict,
    PolymodalError,
    ServiceUnavailable,
    ValidationFailed,
)
from polymodal.domain.principal import Principal
from polymodal.observability.chatbot_metrics import ChatbotMetrics
from polymodal.rag import answer, conversations
from polymodal.rag.answer import ChatbotCaller
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.chatbot_turn import Answer as Answer
from polymodal.rag.chatbot_turn import Prepared as Prepared
from polymodal.rag.chatbot_turn import ReplySettings as ReplySettings
from polymodal.rag.chatbot_turn import SharedQueryEmbedder as SharedQueryEmbedder
from polymodal.rag.chatbot_turn import StreamedAnswer as StreamedAnswer
from polymodal.rag.chatbots import ChatbotStore, ChatbotView, conversation_not_found
from polymodal.rag.conversations import Turn
from polymodal.rag.embedding import Embedder
from polymodal.tenancy.rbac import Permission, require

R = TypeVar("R")


class ChatbotReplies:
    def __init__(
        self,
        *,
        store: ChatbotStore,
        search: CachedSearch | None,
        count_tokens: Callable[[str], int],
        settings: ReplySettings,
        metrics: ChatbotMetrics | None = None,
        query_embedder: Embedder | None = None,
        query_model: str = "local-e5-small",
    ) -> None:
        self.store = store
        self.search = search
        self.query_embedder = query_embedder
        self.query_model = query_model
        self._count = count_tokens
        self._settings = settings
        self.metrics = metrics

    # --- preparing a turn --------------------------------------------------------------------

    def _check_content(self, content: str, param: str) -> str:
        text = content.strip()
        if not text:
            raise ValidationFailed(
                f"{param}: the message is empty.", param=param, code="empty_message"
            )
        if len(text) > self._settings.max_message_chars:
            raise ValidationFailed(
                f"{param}: the message is longer than {self._settings.max_message_chars} "
                "characters.",
                param=param,
            )
        return text

    async def _memory(
        self,
        principal: Principal,
        bot: ChatbotView,
        conversation_id: uuid.UUID,
        caller: ChatbotCaller[Any],
        language: str,
    ) -> tuple[str, list[Turn]]:
        tenant = principal.tenant_id
        async with tenant_session(self.store.sessions, tenant) as session:
            conv = await repo.get_conversation(
                session, tenant_id=tenant, chatbot_id=bot.id, conversation_id=conversation_id
            )
            if conv is None:
                raise conversation_not_found(conversation_id)
            rows = await repo.messages(
                session, tenant_id=tenant, conversation_id=conv.id, after_id=conv.summary_upto
            )
            summary = conv.summary
        turns = [Turn(m.id, m.role, m.content, m.tokens) for m in rows]
        s = self._settings
        memory = conversations.plan(
            turns, summary, window=s.history_messages, trigger_tokens=s.summary_trigger_tokens
        )
        if not memory.fold:
            return memory.summary, memory.window
        summary = await conversations.summarise(
            caller, bot.feature, summary, memory.fold, tier=s.summary_tier, language=language
        )
        async with tenant_session(self.store.sessions, tenant) as session, session.begin():
            conv = await repo.get_conversation(
                session,
                tenant_id=tenant,
                chatbot_id=bot.id,
                conversation_id=conversation_id,
                for_update=True,
            )
            if conv is None:
                raise conversation_not_found(conversation_id)
            conv.summary = summary
            conv.summary_upto = memory.fold[-1].id
        if self.metrics is not None:
            self.metrics.summary()
        return summary, memory.window

    def _client_history(self, history: Sequence[Message]) -> list[Turn]:
        """A stateless (OpenAI-style) call's earlier messages: user and assistant text
        only, and past the token limit only the last window of them (nothing is stored,
        so there is nothing to summarise into)."""
        turns = [
            Turn(0, m["role"], c, self._count(c))
            for m in history
            if m["role"] in ("user", "assistant") and isinstance(c := m.get("content"), str)
        ]
        s = self._settings
        memory = conversations.plan(
            turns, "", window=s.history_messages, trigger_tokens=s.summary_trigger_tokens
        )
        return memory.window

    async def prepare(
        self,
        principal: Principal,
        chatbot_id: uuid.UUID,
        *,
        content: str,
        caller: ChatbotCaller[Any],
        conversation_id: uuid.UUID | None = None,
        history: Sequence[Message] = (),
        param: str = "content",
    ) -> Prepared:
        require(principal, Permission.CHATBOTS_CHAT)
        text = self._check_content(content, param)
        bot = await self.store.load(principal.tenant_id, chatbot_id)
        language = answer.answer_language(bot.language, text)
        if self.search is None:
            raise ServiceUnavailable(
                "knowledge base search is not available on this server.",
                code="retrieval_unavailable",
            )
        async with tenant_session(self.store.sessions, principal.tenant_id) as session:
            versions = await repo.kb_versions(
                session, tenant_id=principal.tenant_id, kb_ids=bot.kb_ids
            )
        missing = [k for k in bot.kb_ids if k not in versions]
        if missing:
            raise Conflict(
                f"chatbot '{bot.id}': knowledge base '{missing[0]}' no longer exists; "
                "update the chatbot's kb_ids.",
                code="knowledge_base_not_found",
            )
        # Memory after the checks above: a summary call is never spent on a turn that
        # cannot be answered.
        if conversation_id is not None:
            summary, turns = await self._memory(principal, bot, conversation_id, caller, language)
        else:
            summary, turns = "", self._client_history(history)
        outcome = await self.search.search(
            tenant_id=principal.tenant_id,
            kb_ids=bot.kb_ids,
            query=text,
            top_k=bot.top_k,
            feature=bot.feature,
            embedder=caller
            if self.query_embedder is None
            else SharedQueryEmbedder(self.query_embedder, principal, self.query_model),
            kb_versions=versions,
        )
        hits = answer.relevant(outcome.retrieval.hits, bot.relevance_threshold)[: bot.top_k]
        sources = answer.number(hits)
        messages: list[Message] = []
        if sources:
            messages = [
                answer.system_message(
                    persona=bot.system_prompt,
                    sources=sources,
                    language=language,
                    style=bot.citation_style,
                    summary=summary,
                ),
                *conversations.as_messages(turns),
                {"role": "user", "content": text},
            ]
        return Prepared(bot, text, language, sources, outcome, messages, conversation_id)

    def _request(self, p: Prepared, *, stream: bool) -> ChatRequest:
        return ChatRequest(
            model=f"tier:{p.bot.tier}",
            messages=p.messages,
            stream=stream,
            include_usage=stream,
            params={"temperature": p.bot.temperature},
        )

    # --- storing a turn ---------------------------------------------------------------------

    async def _store(
        self,
        principal: Principal,
        p: Prepared,
        reply: str,
        citations: list[dict[str, Any]],
        meta: dict[str, Any],
    ) -> int | None:
        if p.conversation_id is None:
            return None
        tenant = principal.tenant_id
        now = utcnow()
        async with tenant_session(self.store.sessions, tenant) as session:
            async with session.begin():
                conv = await repo.get_conversation(
                    session,
                    tenant_id=tenant,
                    chatbot_id=p.bot.id,
                    conversation_id=p.conversation_id,
                    for_update=True,
                )
                if conv is None:  # deleted while the model was answering
                    raise conversation_not_found(p.conversation_id)
                user = ChatMessage(
                    tenant_id=tenant,
                    conversation_id=conv.id,
                    role="user",
                    content=p.content,
                    tokens=self._count(p.content),
                    citations=[],
                    meta={},
                    created_at=now,
                )
                assistant = ChatMessage(
                    tenant_id=tenant,
                    conversation_id=conv.id,
                    role="assistant",
                    content=reply,
                    tokens=self._count(reply),
                    citations=citations,
                    meta=meta,
                    created_at=now,
                )
                session.add(user)
                await session.flush()  # the user message gets the smaller id
                session.add(assistant)
                if not conv.title:
                    conv.title = p.content[:80]
                conv.updated_at = now
            return assistant.id

    def _finish(self, p: Prepared, text: str) -> tuple[str, list[dict[str, Any]]]:
        if p.not_in_kb:
            return text, []
        if p.bot.citation_style == "footnotes":
            text += answer.footnotes(text, p.sources)
        return text, answer.citations(text, p.sources)

    # --- answering ---------------------------------------------------------------------------

    async def reply(self, principal: Principal, p: Prepared, caller: ChatbotCaller[R]) -> Answer[R]:
        routed: R | None = None
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        finish = "stop"
        if p.not_in_kb:
            text, model = answer.not_in_kb(p.language), p.bot.feature
        else:
            with self._counted_failure():
                request = self._request(p, stream=False)
                completion, routed = await caller.chat(p.bot.feature, request)
            choice = completion["choices"][0] if completion["choices"] else None
            text = (choice["message"].get("content") or "") if choice else ""
            finish = (choice.get("finish_reason") if choice else None) or "stop"
            model = completion["model"]
            if completion.get("usage"):
                usage = _usage(completion["usage"])
        text, cites = self._finish(p, text)
        meta = {
            "model": model,
            "usage": usage,
            "retrieval": p.retrieval_info(),
            "not_in_knowledge_base": p.not_in_kb,
        }
        message_id = await self._store(principal, p, text, cites, meta)
        if self.metrics is not None:
            self.metrics.answer("not_in_kb" if p.not_in_kb else "answered")
        return Answer(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            content=text,
            citations=cites,
            not_in_kb=p.not_in_kb,
            model=model,
            language=p.language,
            routed=routed,
            conversation_id=p.conversation_id,
            message_id=message_id,
            retrieval=p.retrieval_info(),
            finish_reason=finish,
            usage=usage,
        )

    async def reply_stream(
        self, principal: Principal, p: Prepared, caller: ChatbotCaller[R]
    ) -> StreamedAnswer[R]:
        """Opens the model's stream before returning (so an upstream failure is still an
        HTTP error); the turn is stored after the last model chunk."""
        if p.not_in_kb:
            return StreamedAnswer(self._relay(principal, p, None, p.bot.feature), None, p)
        with self._counted_failure():
            request = self._request(p, stream=True)
            stream, routed = await caller.chat_stream(p.bot.feature, request)
        return StreamedAnswer(self._relay(principal, p, stream, ""), routed, p)

    @contextlib.contextmanager
    def _counted_failure(self) -> Iterator[None]:
        """Count an answer the model could not give (the error itself goes on up)."""
        try:
            yield
        except PolymodalError:
            if self.metrics is not None:
                self.metrics.answer("error")
            raise

    async def _relay(
        self,
        principal: Principal,
        p: Prepared,
        stream: AsyncIterator[Any] | None,
        model: str,
    ) -> AsyncIterator[dict[str, Any]]:
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        parts: list[str] = []
        usage: dict[str, int] | None = None
        finish_chunk: dict[str, Any] | None = None
        if stream is None:
            parts.append(answer.not_in_kb(p.language))
            yield chunk({"role": "assistant", "content": parts[0]}, None)
            finish_chunk = chunk({}, "stop")
        else:
            with self._counted_failure():  # a stream that breaks counts as an error
                async for c in stream:
                    model = model or c.get("model", "")
                    if c.get("usage"):
                        usage = _usage(c["usage"])
                    choices = c.get("choices") or []
                    if not choices:
                        continue  # the usage-only chunk: reported in the final chunk instead
                    delta = choices[0].get("delta") or {}
                    if delta.get("content"):
                        parts.append(delta["content"])
                    reason = choices[0].get("finish_reason")
                    if reason:
                        # Held back: footnotes (and the stored ids) come before the finish.
                        if delta.get("content"):
                            yield {
                                **c,
                                "id": chunk_id,
                                "choices": [{**choices[0], "finish_reason": None}],
                            }
                        finish_chunk = chunk({}, reason)
                        continue
                    yield {**c, "id": chunk_id}
        text = "".join(parts)
        full, cites = self._finish(p, text)
        if len(full) > len(text):
            yield chunk({"content": full[len(text) :]}, None)
        if finish_chunk is not None:
            yield finish_chunk
        usage = usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        meta = {
            "model": model,
            "usage": usage,
            "retrieval": p.retrieval_info(),
            "not_in_knowledge_base": p.not_in_kb,
        }
        message_id = await self._store(principal, p, full, cites, meta)
        if self.metrics is not None:
            self.metrics.answer("not_in_kb" if p.not_in_kb else "answered")
        done: Answer[None] = Answer(
            id=chunk_id,
            content=full,
            citations=cites,
            not_in_kb=p.not_in_kb,
            model=model,
            language=p.language,
            routed=None,
            conversation_id=p.conversation_id,
            message_id=message_id,
            retrieval=p.retrieval_info(),
            usage=usage,
        )
        yield {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
            **done.extension(),
        }


def _usage(raw: Any) -> dict[str, int]:
    return {k: int(raw.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
