"""Builds the chatbot service from settings for the composition root: the semantic
cache's store follows the cache profile (Redis when the app runs on Redis, in-process
otherwise), and the search is the retriever behind the semantic cache."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.cache.redis import RedisCache
from polymodal.domain.rag import Retriever
from polymodal.observability.chatbot_metrics import ChatbotMetrics
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.chatbot_reply import ChatbotReplies, ReplySettings
from polymodal.rag.chatbots import ChatbotStore
from polymodal.rag.embedding import Embedder
from polymodal.rag.semantic_cache import (
    MemoryVectorStore,
    RedisVectorStore,
    SemanticCache,
    VectorStore,
)
from polymodal.settings import Settings


def semantic_cache(settings: Settings, cache: Cache) -> SemanticCache | None:
    if not settings.semantic_cache_enabled:
        return None
    store: VectorStore
    if isinstance(cache, RedisCache):
        store = RedisVectorStore(
            cache.client,
            prefix=settings.redis_key_prefix,
            max_entries=settings.semantic_cache_max_entries,
            ttl_s=settings.semantic_cache_ttl_s,
        )
    else:
        store = MemoryVectorStore(
            max_entries=settings.semantic_cache_max_entries, ttl_s=settings.semantic_cache_ttl_s
        )
    return SemanticCache(store, threshold=settings.semantic_cache_threshold)


def build_chatbots(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    cache: Cache,
    retriever: Retriever | None,
    count_tokens: Callable[[str], int],
    metrics: ChatbotMetrics | None,
    query_embedder: Embedder | None = None,
) -> ChatbotReplies:
    """``retriever`` None: chatbots can be configured, but answering is a clear 503.
    ``query_embedder``: the knowledge bases' cached embedder, shared with the semantic
    cache (None: the cache embeds through the gateway directly, uncached)."""
    store = ChatbotStore(
        sessions=sessions,
        default_top_k=settings.chatbot_top_k,
        default_relevance_threshold=settings.chatbot_relevance_threshold,
    )
    search = (
        None
        if retriever is None
        else CachedSearch(
            retriever=retriever, cache=semantic_cache(settings, cache), metrics=metrics
        )
    )
    return ChatbotReplies(
        store=store,
        search=search,
        count_tokens=count_tokens,
        settings=ReplySettings(
            history_messages=settings.chatbot_history_messages,
            summary_trigger_tokens=settings.chatbot_summary_trigger_tokens,
            summary_tier=settings.chatbot_summary_tier,
            max_message_chars=settings.chatbot_max_message_chars,
        ),
        metrics=metrics,
        query_embedder=query_embedder,
        query_model=settings.semantic_cache_embedding_model,
    )
