"""Chatbots and their conversations: per-tenant configuration (KBs, persona, language,
tier, temperature, top_k, citation style, relevance threshold) and stored
conversations. Answering lives in ``chatbot_reply``.

Every method takes the caller's ``Principal``, checks its permission from the one
table (``tenancy.rbac``) and works inside the principal's tenant only: a chatbot,
conversation or KB of another tenant is reported as not existing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import chatbots as repo
from polymodal.db import repositories
from polymodal.db.models import utcnow
from polymodal.db.models_chatbots import Chatbot, ChatMessage, Conversation
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Conflict, NotFound, ValidationFailed
from polymodal.domain.principal import Principal
from polymodal.rag.answer import CITATION_STYLES, LANGUAGES
from polymodal.tenancy.rbac import Permission, require

TIERS = ("simple", "complex", "critical")
MAX_KBS = 10
MAX_TOP_K = 50


@dataclass(frozen=True, slots=True)
class ChatbotSpec:
    """A chatbot's settings as given by the client (``None``: keep / use the default)."""

    name: str | None = None
    kb_ids: Sequence[uuid.UUID] | None = None
    system_prompt: str | None = None
    language: str | None = None
    tier: str | None = None
    temperature: float | None = None
    top_k: int | None = None
    citation_style: str | None = None
    relevance_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class ChatbotView:
    id: uuid.UUID
    name: str
    kb_ids: tuple[uuid.UUID, ...]
    system_prompt: str
    language: str
    tier: str
    temperature: float
    top_k: int
    citation_style: str
    relevance_threshold: float
    created_at: datetime
    updated_at: datetime

    @property
    def feature(self) -> str:
        return f"chatbot:{self.id}"

    @classmethod
    def of(cls, row: Chatbot) -> ChatbotView:
        return cls(
            id=row.id,
            name=row.name,
            kb_ids=tuple(uuid.UUID(k) for k in row.kb_ids),
            system_prompt=row.system_prompt,
            language=row.language,
            tier=row.tier,
            temperature=row.temperature,
            top_k=row.top_k,
            citation_style=row.citation_style,
            relevance_threshold=row.relevance_threshold,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    role: str
    content: str
    citations: list[Any]
    meta: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, row: ChatMessage) -> MessageView:
        return cls(row.id, row.role, row.content, row.citations, row.meta, row.created_at)


@dataclass(frozen=True, slots=True)
class ConversationView:
    id: uuid.UUID
    chatbot_id: uuid.UUID
    title: str
    summary: str
    created_at: datetime
    updated_at: datetime
    message_count: int = 0
    messages: list[MessageView] = field(default_factory=list)

    @classmethod
    def of(
        cls, row: Conversation, count: int = 0, messages: list[MessageView] | None = None
    ) -> ConversationView:
        return cls(
            row.id,
            row.chatbot_id,
            row.title,
            row.summary,
            row.created_at,
            row.updated_at,
            count if messages is None else len(messages),
            messages or [],
        )


def chatbot_not_found(chatbot_id: uuid.UUID | str) -> NotFound:
    return NotFound(f"chatbot '{chatbot_id}' does not exist.", code="chatbot_not_found")


def conversation_not_found(conversation_id: uuid.UUID | str) -> NotFound:
    return NotFound(
        f"conversation '{conversation_id}' does not exist for this chatbot.",
        code="conversation_not_found",
    )


def _check(spec: ChatbotSpec) -> None:
    """Rules pydantic at the edge cannot see (or that a non-HTTP caller skips)."""
    if spec.name is not None and not spec.name.strip():
        raise ValidationFailed("name: must not be blank.", param="name")
    if spec.kb_ids is not None:
        if not spec.kb_ids:
            raise ValidationFailed(
                "kb_ids: a chatbot needs at least one knowledge base.", param="kb_ids"
            )
        if len(spec.kb_ids) > MAX_KBS:
            raise ValidationFailed(f"kb_ids: at most {MAX_KBS} knowledge bases.", param="kb_ids")
    if spec.language is not None and spec.language not in ("auto", *LANGUAGES):
        raise ValidationFailed(
            f"language: '{spec.language}' is not one of auto, {', '.join(LANGUAGES)}.",
            param="language",
        )
    if spec.tier is not None and spec.tier not in TIERS:
        raise ValidationFailed(
            f"tier: '{spec.tier}' is not one of {', '.join(TIERS)}.", param="tier"
        )
    if spec.citation_style is not None and spec.citation_style not in CITATION_STYLES:
        raise ValidationFailed(
            f"citation_style: '{spec.citation_style}' is not one of {', '.join(CITATION_STYLES)}.",
            param="citation_style",
        )
    if spec.temperature is not None and not 0 <= spec.temperature <= 2:
        raise ValidationFailed("temperature: must be between 0 and 2.", param="temperature")
    if spec.top_k is not None and not 1 <= spec.top_k <= MAX_TOP_K:
        raise ValidationFailed(f"top_k: must be between 1 and {MAX_TOP_K}.", param="top_k")
    if spec.relevance_threshold is not None and not 0 <= spec.relevance_threshold <= 1:
        raise ValidationFailed(
            "relevance_threshold: must be between 0 and 1.", param="relevance_threshold"
        )


class KnowledgeBaseNotFound(NotFound):
    """A body names a knowledge base the tenant does not own: 404 like any other object
    of another tenant, with ``param`` naming the field."""

    code = "knowledge_base_not_found"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


async def check_kbs(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_ids: Sequence[uuid.UUID], param: str
) -> dict[uuid.UUID, int]:
    """The versions of ``kb_ids``; one the tenant does not own is named as missing (a KB
    of another tenant is indistinguishable from one that never existed)."""
    versions = await repo.kb_versions(session, tenant_id=tenant_id, kb_ids=kb_ids)
    for kb_id in kb_ids:
        if kb_id not in versions:
            raise KnowledgeBaseNotFound(
                f"{param}: knowledge base '{kb_id}' does not exist.", param=param
            )
    return versions


class ChatbotStore:
    """CRUD of chatbots and conversations (the answering service builds on it)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        default_top_k: int,
        default_relevance_threshold: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self._default_top_k = default_top_k
        self._default_threshold = default_relevance_threshold
        self._clock = clock

    # --- chatbots ---------------------------------------------------------------------------

    async def create(self, principal: Principal, spec: ChatbotSpec) -> ChatbotView:
        require(principal, Permission.CHATBOTS_WRITE)
        if spec.name is None or spec.kb_ids is None:
            raise ValidationFailed("name and kb_ids are required.", param="name")
        _check(spec)
        kb_ids = list(dict.fromkeys(spec.kb_ids))
        now = self._clock()
        row = Chatbot(
            tenant_id=principal.tenant_id,
            name=spec.name.strip(),
            kb_ids=[str(k) for k in kb_ids],
            system_prompt=spec.system_prompt or "",
            language=spec.language or "auto",
            tier=spec.tier or "simple",
            temperature=0.2 if spec.temperature is None else spec.temperature,
            top_k=spec.top_k or self._default_top_k,
            citation_style=spec.citation_style or "numeric",
            relevance_threshold=self._default_threshold
            if spec.relevance_threshold is None
            else spec.relevance_threshold,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        async with tenant_session(self.sessions, principal.tenant_id) as session:
            try:
                async with session.begin():
                    await check_kbs(
                        session, tenant_id=principal.tenant_id, kb_ids=kb_ids, param="kb_ids"
                    )
                    if await repo.name_taken(
                        session, tenant_id=principal.tenant_id, name=row.name, other_than=None
                    ):
                        raise _name_conflict(row.name)
                    session.add(row)
            except IntegrityError as e:  # a concurrent create with the same name
                raise _name_conflict(row.name) from e
            return ChatbotView.of(row)

    async def get(self, principal: Principal, chatbot_id: uuid.UUID) -> ChatbotView:
        require(principal, Permission.CHATBOTS_READ)
        return await self.load(principal.tenant_id, chatbot_id)

    async def load(self, tenant_id: uuid.UUID, chatbot_id: uuid.UUID) -> ChatbotView:
        """No permission check: for the answering service, which checks its own."""
        async with tenant_session(self.sessions, tenant_id) as session:
            row = await repo.get_chatbot(session, tenant_id=tenant_id, chatbot_id=chatbot_id)
            if row is None:
                raise chatbot_not_found(chatbot_id)
            return ChatbotView.of(row)

    async def list_all(self, principal: Principal) -> list[ChatbotView]:
        require(principal, Permission.CHATBOTS_READ)
        async with tenant_session(self.sessions, principal.tenant_id) as session:
            rows = await repo.list_chatbots(session, tenant_id=principal.tenant_id)
            return [ChatbotView.of(r) for r in rows]

    async def update(
        self, principal: Principal, chatbot_id: uuid.UUID, spec: ChatbotSpec
    ) -> ChatbotView:
        require(principal, Permission.CHATBOTS_WRITE)
        _check(spec)
        tenant = principal.tenant_id
        async with tenant_session(self.sessions, tenant) as session:
            try:
                async with session.begin():
                    row = await repo.get_chatbot(session, tenant_id=tenant, chatbot_id=chatbot_id)
                    if row is None:
                        raise chatbot_not_found(chatbot_id)
                    changes = {
                        f.name: getattr(spec, f.name)
                        for f in fields(spec)
                        if getattr(spec, f.name) is not None
                    }
                    if "kb_ids" in changes:
                        kb_ids = list(dict.fromkeys(changes["kb_ids"]))
                        await check_kbs(session, tenant_id=tenant, kb_ids=kb_ids, param="kb_ids")
                        changes["kb_ids"] = [str(k) for k in kb_ids]
                    if "name" in changes:
                        changes["name"] = changes["name"].strip()
                        if await repo.name_taken(
                            session, tenant_id=tenant, name=changes["name"], other_than=row.id
                        ):
                            raise _name_conflict(changes["name"])
                    for name, value in changes.items():
                        setattr(row, name, value)
                    row.updated_at = self._clock()
            except IntegrityError as e:
                raise _name_conflict(spec.name or "") from e
            return ChatbotView.of(row)

    async def delete(self, principal: Principal, chatbot_id: uuid.UUID) -> None:
        require(principal, Permission.CHATBOTS_WRITE)
        tenant = principal.tenant_id
        async with tenant_session(self.sessions, tenant) as session, session.begin():
            if not await repo.delete_chatbot(session, tenant_id=tenant, chatbot_id=chatbot_id):
                raise chatbot_not_found(chatbot_id)
            await repositories.append_audit(
                session,
                tenant_id=tenant,
                actor=f"user:{principal.user_id}",
                action="chatbot.delete",
                target=str(chatbot_id),
                at=utcnow(),
            )

    # --- conversations ------------------------------------------------------------------------

    async def create_conversation(
        self, principal: Principal, chatbot_id: uuid.UUID, *, title: str = ""
    ) -> ConversationView:
        require(principal, Permission.CHATBOTS_CHAT)
        tenant = principal.tenant_id
        now = self._clock()
        async with tenant_session(self.sessions, tenant) as session:
            async with session.begin():
                if await repo.get_chatbot(session, tenant_id=tenant, chatbot_id=chatbot_id) is None:
                    raise chatbot_not_found(chatbot_id)
                row = Conversation(
                    tenant_id=tenant,
                    chatbot_id=chatbot_id,
                    user_id=principal.user_id,
                    title=title.strip()[:200],
                    summary="",
                    summary_upto=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            return ConversationView.of(row)

    async def list_conversations(
        self, principal: Principal, chatbot_id: uuid.UUID, *, limit: int, offset: int
    ) -> tuple[list[ConversationView], int]:
        require(principal, Permission.CHATBOTS_READ)
        tenant = principal.tenant_id
        async with tenant_session(self.sessions, tenant) as session:
            if await repo.get_chatbot(session, tenant_id=tenant, chatbot_id=chatbot_id) is None:
                raise chatbot_not_found(chatbot_id)
            rows, total = await repo.list_conversations(
                session, tenant_id=tenant, chatbot_id=chatbot_id, limit=limit, offset=offset
            )
            return [ConversationView.of(c, n) for c, n in rows], total

    async def get_conversation(
        self, principal: Principal, chatbot_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> ConversationView:
        require(principal, Permission.CHATBOTS_READ)
        tenant = principal.tenant_id
        async with tenant_session(self.sessions, tenant) as session:
            conv = await repo.get_conversation(
                session, tenant_id=tenant, chatbot_id=chatbot_id, conversation_id=conversation_id
            )
            if conv is None:
                await self._chatbot_exists(session, tenant, chatbot_id)
                raise conversation_not_found(conversation_id)
            rows = await repo.messages(session, tenant_id=tenant, conversation_id=conv.id)
            return ConversationView.of(conv, messages=[MessageView.of(m) for m in rows])

    async def delete_conversation(
        self, principal: Principal, chatbot_id: uuid.UUID, conversation_id: uuid.UUID
    ) -> None:
        require(principal, Permission.CHATBOTS_CHAT)
        tenant = principal.tenant_id
        async with tenant_session(self.sessions, tenant) as session, session.begin():
            if not await repo.delete_conversation(
                session,
                tenant_id=tenant,
                chatbot_id=chatbot_id,
                conversation_id=conversation_id,
            ):
                await self._chatbot_exists(session, tenant, chatbot_id)
                raise conversation_not_found(conversation_id)

    @staticmethod
    async def _chatbot_exists(
        session: AsyncSession, tenant_id: uuid.UUID, chatbot_id: uuid.UUID
    ) -> None:
        """Name the chatbot when it is the missing piece, not the conversation."""
        if await repo.get_chatbot(session, tenant_id=tenant_id, chatbot_id=chatbot_id) is None:
            raise chatbot_not_found(chatbot_id)


def _name_conflict(name: str) -> Conflict:
    return Conflict(f"name: a chatbot named '{name}' already exists.", code="chatbot_name_taken")
