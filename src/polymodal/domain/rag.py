"""The contract between retrieval (knowledge bases, index, search) and its users
(chatbots, the semantic query cache, pipelines). No I/O here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk, with what a citation needs."""

    kb_id: uuid.UUID
    doc_id: uuid.UUID
    chunk_no: int
    text: str
    score: float  # fused score (reciprocal rank fusion); higher is better
    title: str = ""
    page: int | None = None  # 1-based page for paged formats (pdf), else None
    section: str | None = None  # heading path for md/html/docx, else None
    char_start: int = 0
    char_end: int = 0
    dense_score: float | None = None  # cosine of the dense match, when it matched densely


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The result of one search: the hits plus what the caller needs to judge them."""

    hits: Sequence[Hit]
    kb_versions: dict[uuid.UUID, int] = field(default_factory=dict)
    cached: bool = False  # served by the semantic query cache


class Retriever(Protocol):
    """Hybrid search over a tenant's knowledge bases, always filtered by tenant and KB."""

    async def search(
        self,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        query: str,
        top_k: int = 8,
        feature: str = "api",
    ) -> Retrieval: ...
