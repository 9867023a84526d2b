"""A small in-memory `Retriever` for chatbot tests: bag-of-words cosine over chunks kept
per (tenant, KB). A real implementation of the protocol (not a mock of the code under
test), so chatbot tests do not depend on the vector index; tests with real ingestion
use the product's hybrid search."""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from polymodal.domain.rag import Hit, Retrieval

_WORD = re.compile(r"\w+", re.UNICODE)


def _bag(text: str) -> Counter[str]:
    return Counter(w.casefold() for w in _WORD.findall(text) if len(w) > 2)


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


@dataclass
class Chunk:
    doc_id: uuid.UUID
    chunk_no: int
    title: str
    page: int | None
    text: str


@dataclass
class WordRetriever:
    chunks: dict[tuple[uuid.UUID, uuid.UUID], list[Chunk]] = field(default_factory=dict)
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    calls: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)

    def add(
        self,
        tenant_id: uuid.UUID,
        kb_id: uuid.UUID,
        *,
        title: str,
        text: str,
        page: int | None = None,
        version: int = 1,
    ) -> Chunk:
        chunks = self.chunks.setdefault((tenant_id, kb_id), [])
        chunk = Chunk(uuid.uuid4(), len(chunks), title, page, text)
        chunks.append(chunk)
        self.versions[kb_id] = version
        return chunk

    async def search(
        self,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        query: str,
        top_k: int = 8,
        feature: str = "api",
    ) -> Retrieval:
        self.calls.append((tenant_id, query, feature))
        q = _bag(query)
        scored = [
            (_cosine(q, _bag(c.text)), kb_id, c)
            for kb_id in kb_ids
            for c in self.chunks.get((tenant_id, kb_id), [])
        ]
        scored.sort(key=lambda s: -s[0])
        hits = [
            Hit(
                kb_id=kb_id,
                doc_id=c.doc_id,
                chunk_no=c.chunk_no,
                text=c.text,
                score=score,
                title=c.title,
                page=c.page,
                char_start=0,
                char_end=len(c.text),
                dense_score=score,
            )
            for score, kb_id, c in scored[:top_k]
            if score > 0
        ]
        return Retrieval(hits=hits, kb_versions={k: self.versions.get(k, 1) for k in kb_ids})
