"""Hybrid search (implements `polymodal.domain.rag.Retriever`): a dense arm and a BM25
arm per embedding model, fused with reciprocal rank fusion, always filtered by tenant
and knowledge base.

Fusion is ours rather than Qdrant's ``FusionQuery(RRF)``: both arms still go to Qdrant
in one ``query_batch_points`` round trip, and fusing here keeps each hit's cosine
(``Hit.dense_score``), which the semantic cache and "not in the knowledge base"
decisions need and server-side fusion throws away.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import knowledge as repo
from polymodal.db.models_rag import KnowledgeBase
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import InvalidRequest, NotFound
from polymodal.domain.rag import Hit, Retrieval
from polymodal.rag.bm25 import Bm25
from polymodal.rag.embedding import Embedder, acting_for
from polymodal.rag.index import Match, VectorIndex, collection_name

Mode = Literal["hybrid", "dense", "bm25"]
MAX_TOP_K = 100
MAX_QUERY_CHARS = 4000


@dataclass(frozen=True, slots=True)
class SearchConfig:
    candidates: int = 100
    rrf_k: int = 10


def rrf(
    ranked: Sequence[Sequence[Match]], k: int
) -> list[tuple[tuple[str, int], float, dict[str, Any]]]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank(d))."""
    scores: dict[tuple[str, int], float] = defaultdict(float)
    payloads: dict[tuple[str, int], dict[str, Any]] = {}
    for matches in ranked:
        for rank, m in enumerate(matches, start=1):
            key = (str(m.payload.get("doc_id")), int(m.payload.get("chunk_no", 0)))
            scores[key] += 1.0 / (k + rank)
            payloads.setdefault(key, m.payload)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(key, score, payloads[key]) for key, score in ordered]


class HybridRetriever:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        embedder: Embedder,
        index: VectorIndex,
        bm25: Bm25,
        config: SearchConfig,
    ) -> None:
        self._sessions = sessions
        self._embedder = embedder
        self._index = index
        self._bm25 = bm25
        self._config = config

    async def versions(
        self, *, tenant_id: uuid.UUID, kb_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, int]:
        """Current version of each KB; an id the tenant does not own is `NotFound`."""
        async with tenant_session(self._sessions, tenant_id) as s:
            kbs = await repo.get_kbs(s, tenant_id=tenant_id, kb_ids=kb_ids)
        _check_found(kb_ids, kbs)
        return {kb.id: kb.version for kb in kbs}

    async def search(
        self,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        query: str,
        top_k: int = 8,
        feature: str = "api",
        user_id: uuid.UUID | None = None,
        mode: Mode = "hybrid",
    ) -> Retrieval:
        query = query.strip()
        if not query:
            raise InvalidRequest("query: must not be empty.", code="empty_query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query: longer than {MAX_QUERY_CHARS} characters.")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequest(f"top_k: must be between 1 and {MAX_TOP_K}.")
        if not kb_ids:
            raise InvalidRequest("knowledge_base_ids: name at least one knowledge base.")
        async with tenant_session(self._sessions, tenant_id) as s:
            kbs = await repo.get_kbs(s, tenant_id=tenant_id, kb_ids=kb_ids)
        _check_found(kb_ids, kbs)
        groups: dict[tuple[str, int], list[uuid.UUID]] = defaultdict(list)
        for kb in kbs:
            groups[(kb.embedding_model, kb.dimensions)].append(kb.id)
        principal = acting_for(tenant_id, user_id)
        limit = max(self._config.candidates, top_k)
        sparse = self._bm25.query(query) if mode != "dense" else None
        ranked: list[list[Match]] = []
        cosine: dict[tuple[str, int], float] = {}
        for (model, dims), ids in groups.items():
            dense = None
            if mode != "bm25":
                dense = (
                    await self._embedder.embed(
                        principal=principal,
                        feature=feature,
                        model=model,
                        texts=[query],
                        kind="query",
                    )
                )[0]
            dense_hits, sparse_hits = await self._index.search(
                collection_name(model, dims),
                tenant_id=tenant_id,
                kb_ids=ids,
                dense=dense,
                sparse=sparse,
                limit=limit,
            )
            for m in dense_hits:
                cosine[(str(m.payload.get("doc_id")), int(m.payload.get("chunk_no", 0)))] = m.score
            ranked.extend(x for x in (dense_hits, sparse_hits) if x)
        hits = [
            _hit(payload, score, cosine.get(key))
            for key, score, payload in rrf(ranked, self._config.rrf_k)[:top_k]
        ]
        return Retrieval(hits=hits, kb_versions={kb.id: kb.version for kb in kbs})


def _check_found(kb_ids: Sequence[uuid.UUID], kbs: Sequence[KnowledgeBase]) -> None:
    missing = set(kb_ids) - {kb.id for kb in kbs}
    if missing:
        # Another tenant's KB looks exactly like one that does not exist.
        raise NotFound(
            f"knowledge base {sorted(map(str, missing))[0]} does not exist.", code="kb_not_found"
        )


def _hit(payload: dict[str, Any], score: float, dense_score: float | None) -> Hit:
    return Hit(
        kb_id=uuid.UUID(str(payload["kb_id"])),
        doc_id=uuid.UUID(str(payload["doc_id"])),
        chunk_no=int(payload["chunk_no"]),
        text=str(payload.get("text", "")),
        score=score,
        title=str(payload.get("title") or ""),
        page=payload.get("page"),
        section=payload.get("section"),
        char_start=int(payload.get("char_start", 0)),
        char_end=int(payload.get("char_end", 0)),
        dense_score=dense_score,
    )
