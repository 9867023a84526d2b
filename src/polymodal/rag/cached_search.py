"""Retrieval through the semantic query cache: embed the query (local multilingual e5,
``query:`` prefix, through the gateway so the call is a usage row of the caller's
feature), look it up in the tenant's scope, search on a miss and remember the result.

The query embedding here is the cache's own (query against query) and is independent of
the KB's embedding model. On a miss it is an extra embedding call; the retriever's own
query embedding goes through its embedding cache.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from polymodal.domain.rag import Retrieval, Retriever
from polymodal.observability.chatbot_metrics import ChatbotMetrics
from polymodal.rag.semantic_cache import Scope, SemanticCache

CacheResult = Literal["hit", "miss", "guarded", "off", "stale"]


class QueryEmbedder(Protocol):
    """One query vector, through the gateway, billed to ``feature``."""

    async def embed_query(self, text: str, *, feature: str) -> list[float]: ...


class KnowledgeBaseVersions(Protocol):
    """The current version of each KB, checked against the tenant: an id the tenant does
    not own raises ``NotFound`` naming it."""

    async def versions(
        self, *, tenant_id: uuid.UUID, kb_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, int]: ...


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    retrieval: Retrieval
    cache: CacheResult
    similarity: float | None  # cosine to the cached query (hits only)
    search_s: float  # time spent searching now (0 on a hit)
    saved_s: float  # on a hit: the original search time minus this lookup's time
    lookup_s: float  # embedding + lookup time of the cache
    matched_query: str | None = None  # hits: the cached query that served (diagnostics)


class CachedSearch:
    """A ``Retriever`` front that serves repeats and paraphrases from the cache."""

    def __init__(
        self,
        *,
        retriever: Retriever,
        cache: SemanticCache | None,
        versions: KnowledgeBaseVersions | None = None,
        metrics: ChatbotMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.retriever = retriever
        self.versions = versions
        self.cache = cache
        self._metrics = metrics
        self._clock = clock

    async def search(
        self,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        query: str,
        top_k: int,
        feature: str,
        embedder: QueryEmbedder,
        kb_versions: dict[uuid.UUID, int] | None = None,
    ) -> SearchOutcome:
        if kb_versions is None:
            if self.versions is None:
                raise TypeError("kb_versions is required when no version source is set")
            kb_versions = await self.versions.versions(tenant_id=tenant_id, kb_ids=kb_ids)
        if self.cache is None:
            return await self._search(tenant_id, kb_ids, query, top_k, feature, "off", None, 0.0)
        started = self._clock()
        vector = await embedder.embed_query(query, feature=feature)
        scope = Scope.of(tenant_id, kb_versions, top_k)
        cached, refused = await self.cache.get(scope, vector, query)
        lookup_s = self._clock() - started
        if cached is not None:
            saved = max(cached.search_s - lookup_s, 0.0)
            if self._metrics is not None:
                self._metrics.lookup("hit", saved)
            return SearchOutcome(
                cached.retrieval, "hit", cached.similarity, 0.0, saved, lookup_s, cached.query
            )
        result: CacheResult = "guarded" if refused else "miss"
        outcome = await self._search(
            tenant_id,
            kb_ids,
            query,
            top_k,
            feature,
            result,
            None,
            lookup_s,
        )
        found = outcome.retrieval
        if found.kb_versions and dict(found.kb_versions) != kb_versions:
            # A KB changed between the version read and the search: do not file this
            # result under versions it does not belong to.
            return SearchOutcome(found, "stale", None, outcome.search_s, 0.0, lookup_s)
        await self.cache.put(scope, vector, query, found, outcome.search_s)
        if self._metrics is not None:
            self._metrics.lookup(result)
        return outcome

    async def _search(
        self,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        query: str,
        top_k: int,
        feature: str,
        result: CacheResult,
        similarity: float | None,
        lookup_s: float,
    ) -> SearchOutcome:
        started = self._clock()
        retrieval = await self.retriever.search(
            tenant_id=tenant_id, kb_ids=kb_ids, query=query, top_k=top_k, feature=feature
        )
        return SearchOutcome(retrieval, result, similarity, self._clock() - started, 0.0, lookup_s)
