"""What a chatbot turn is made of: its settings, the prepared turn (retrieval and
prompt), the answer (with what polymodal adds to OpenAI's response shape), and the
shared query embedder of the semantic cache."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from polymodal.domain.chat import Message
from polymodal.domain.principal import Principal
from polymodal.rag.answer import Source
from polymodal.rag.cached_search import SearchOutcome
from polymodal.rag.chatbots import ChatbotView
from polymodal.rag.embedding import Embedder

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ReplySettings:
    history_messages: int  # messages kept verbatim once the history is summarised
    summary_trigger_tokens: int  # unsummarised history above this is folded
    summary_tier: str  # the cheap tier that writes summaries
    max_message_chars: int


@dataclass(slots=True)
class Prepared:
    bot: ChatbotView
    content: str
    language: str
    sources: list[Source]
    outcome: SearchOutcome
    messages: list[Message]  # the model's prompt (empty when not in the KB)
    conversation_id: uuid.UUID | None

    @property
    def not_in_kb(self) -> bool:
        return not self.sources

    def retrieval_info(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "cache": o.cache,
            "similarity": None if o.similarity is None else round(o.similarity, 4),
            "hits": len(o.retrieval.hits),
            "relevant": len(self.sources),
            "search_ms": round(o.search_s * 1000, 2),
            "saved_ms": round(o.saved_s * 1000, 2),
        }


@dataclass(slots=True)
class Answer(Generic[R]):
    id: str
    content: str
    citations: list[dict[str, Any]]
    not_in_kb: bool
    model: str
    language: str
    routed: R | None
    conversation_id: uuid.UUID | None
    message_id: int | None
    retrieval: dict[str, Any]
    finish_reason: str = "stop"
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )

    def extension(self) -> dict[str, Any]:
        """What polymodal adds to OpenAI's response shape."""
        return {
            "citations": self.citations,
            "conversation_id": str(self.conversation_id) if self.conversation_id else None,
            "message_id": self.message_id,
            "polymodal": {
                "not_in_knowledge_base": self.not_in_kb,
                "language": self.language,
                "retrieval": self.retrieval,
            },
        }


@dataclass(slots=True)
class StreamedAnswer(Generic[R]):
    """Chunks in OpenAI's ``chat.completion.chunk`` shape; the last one has no choices
    and carries ``citations`` (and the stored ids) like ``Answer.extension``."""

    chunks: AsyncIterator[dict[str, Any]]
    routed: R | None
    prepared: Prepared


@dataclass(frozen=True, slots=True)
class SharedQueryEmbedder:
    """The cache's query embedding through the knowledge bases' embedding cache (keyed by
    tenant, model, kind and text): a repeated question is not embedded again, and on a
    miss the retriever finds the same query vector already cached (when the KB uses the
    same model), so the semantic cache adds no second embedding."""

    embedder: Embedder
    principal: Principal
    model: str

    async def embed_query(self, text: str, *, feature: str) -> list[float]:
        vectors = await self.embedder.embed(
            principal=self.principal,
            feature=feature,
            model=self.model,
            texts=[text],
            kind="query",
        )
        return vectors[0]
