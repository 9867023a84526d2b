"""The vector index: Qdrant. Two engines behind one interface (``VectorIndex``):

- ``QdrantClientIndex``: ``qdrant-client`` against a Qdrant server (production), or the
  client's pure-Python local mode (tests use it to run the server code path offline);
- ``EdgeIndex`` (rag/edge_index.py): Qdrant Edge, Qdrant's in-process engine (Rust),
  in a folder: the embedded profile's default. The client's local mode scans every
  point in Python (over a second per query at 10k chunks); Edge searches 100k in
  ~30 ms (bench/rag_latency.py).

One collection per embedding model (``kb_<deployment>_<dims>``) holds every tenant's
chunks: a dense vector (cosine) and a BM25 sparse vector (``modifier=IDF``) per point,
and the payload ``tenant_id, kb_id, doc_id, chunk_no`` (plus what a citation needs).
``tenant_id`` has a tenant payload index (``is_tenant=True``). Every read and delete
here takes the tenant and filters on it; there is no call without one.

The client is synchronous and called in a worker thread: local mode is CPU-bound numpy
that would otherwise stall the event loop, and it is not thread-safe, hence the lock.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from polymodal.rag.bm25 import SparseVector

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models
else:

    class _Lazy:
        """``qdrant_client.models``, imported on first use: the client library costs ~1.5 s
        of CPU to import, which start-up (and every CLI call) should not pay."""

        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("qdrant_client.models"), name)

    models = _Lazy()

T = TypeVar("T")
DENSE = "dense"
SPARSE = "bm25"
_POINT_NS = uuid.UUID("5b0c7a52-4f0e-4d0b-9a51-3f1c2b6d9e10")


def point_id(doc_id: uuid.UUID, chunk_no: int) -> str:
    """Deterministic, so a retried or resumed ingestion overwrites instead of adding."""
    return str(uuid.uuid5(_POINT_NS, f"{doc_id}:{chunk_no}"))


def collection_name(embedding_model: str, dimensions: int) -> str:
    return f"kb_{re.sub(r'[^A-Za-z0-9_-]', '_', embedding_model)}_{dimensions}"


@dataclass(frozen=True, slots=True)
class ChunkPoint:
    tenant_id: uuid.UUID
    kb_id: uuid.UUID
    doc_id: uuid.UUID
    chunk_no: int
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]  # text, title, page, section, char_start, char_end


@dataclass(frozen=True, slots=True)
class Match:
    payload: dict[str, Any]
    score: float


class VectorIndex(Protocol):
    """What ingestion, search and the knowledge service need of an index. Every read and
    delete takes the tenant."""

    def close(self) -> None: ...

    async def upsert(
        self, collection: str, dimensions: int, points: Sequence[ChunkPoint]
    ) -> None: ...

    async def delete(
        self,
        collection: str,
        *,
        tenant_id: uuid.UUID,
        kb_id: uuid.UUID,
        doc_id: uuid.UUID | None = None,
        from_chunk: int | None = None,
    ) -> None: ...

    async def count(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID | None
    ) -> int: ...

    async def chunk_texts(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID
    ) -> list[str]: ...

    async def search(
        self,
        collection: str,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        dense: list[float] | None,
        sparse: SparseVector | None,
        limit: int,
    ) -> tuple[list[Match], list[Match]]:
        """Dense and BM25 candidates, each filtered by tenant and KB."""
        ...


def split_arms(
    results: list[list[Match]], dense: list[float] | None
) -> tuple[list[Match], list[Match]]:
    """(dense hits, BM25 hits) from a batch that asked for either arm or both."""
    dense_hits = results.pop(0) if dense is not None else []
    sparse_hits = results.pop(0) if results else []
    return dense_hits, sparse_hits


def chunk_payload(p: ChunkPoint) -> dict[str, Any]:
    return {
        **p.payload,
        "tenant_id": str(p.tenant_id),
        "kb_id": str(p.kb_id),
        "doc_id": str(p.doc_id),
        "chunk_no": p.chunk_no,
    }


class QdrantClientIndex:
    def __init__(self, *, url: str | None, path: Path | None, timeout_s: float = 10.0) -> None:
        self.local = url is None
        self._url, self._path, self._timeout_s = url, path, timeout_s
        self._opened: QdrantClient | None = None
        self._open_lock = threading.Lock()
        self._lock = threading.Lock() if self.local else None
        self._known: set[str] = set()

    @property
    def _client(self) -> QdrantClient:
        """Opened on first use (local mode locks its folder from then on)."""
        with self._open_lock:
            if self._opened is None:
                from qdrant_client import QdrantClient

                if self._url is not None:
                    self._opened = QdrantClient(url=self._url, timeout=int(max(self._timeout_s, 1)))
                elif self._path is None:  # in memory: benchmarks and tests only
                    self._opened = QdrantClient(location=":memory:")
                else:
                    self._path.mkdir(parents=True, exist_ok=True)
                    self._opened = QdrantClient(path=str(self._path))
            return self._opened

    def _sync(self, fn: Callable[[], T]) -> T:
        if self._lock is None:
            return fn()
        with self._lock:
            return fn()

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._sync, fn)

    def close(self) -> None:
        if self._opened is not None:
            self._sync(self._opened.close)
            self._opened = None

    # --- collections ---------------------------------------------------------------------

    def _ensure(self, name: str, dimensions: int) -> None:
        if name in self._known:
            return
        if not self._client.collection_exists(name):
            self._client.create_collection(
                name,
                vectors_config={
                    DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            if not self.local:  # local mode has no payload indexes (and warns)
                self._client.create_payload_index(
                    name,
                    "tenant_id",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )
                for field in ("kb_id", "doc_id"):
                    self._client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
        self._known.add(name)

    # --- writes ----------------------------------------------------------------------------

    async def upsert(self, collection: str, dimensions: int, points: Sequence[ChunkPoint]) -> None:
        def run() -> None:
            self._ensure(collection, dimensions)
            self._client.upsert(
                collection,
                points=[
                    models.PointStruct(
                        id=point_id(p.doc_id, p.chunk_no),
                        vector={
                            DENSE: p.dense,
                            SPARSE: models.SparseVector(
                                indices=p.sparse.indices, values=p.sparse.values
                            ),
                        },
                        payload=chunk_payload(p),
                    )
                    for p in points
                ],
                wait=True,
            )

        await self._call(run)

    async def delete(
        self,
        collection: str,
        *,
        tenant_id: uuid.UUID,
        kb_id: uuid.UUID,
        doc_id: uuid.UUID | None = None,
        from_chunk: int | None = None,
    ) -> None:
        """Delete a tenant's points of one KB, or of one document (from chunk N on)."""
        must: list[models.Condition] = [_match("tenant_id", tenant_id), _match("kb_id", kb_id)]
        if doc_id is not None:
            must.append(_match("doc_id", doc_id))
        if from_chunk is not None:
            must.append(models.FieldCondition(key="chunk_no", range=models.Range(gte=from_chunk)))

        def run() -> None:
            if self._client.collection_exists(collection):
                self._client.delete(
                    collection,
                    points_selector=models.FilterSelector(filter=models.Filter(must=must)),
                    wait=True,
                )

        await self._call(run)

    async def count(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID | None
    ) -> int:
        must: list[models.Condition] = [_match("tenant_id", tenant_id), _match("kb_id", kb_id)]
        if doc_id is not None:
            must.append(_match("doc_id", doc_id))

        def run() -> int:
            if not self._client.collection_exists(collection):
                return 0
            return int(self._client.count(collection, count_filter=models.Filter(must=must)).count)

        return await self._call(run)

    # --- reads -------------------------------------------------------------------------------

    async def chunk_texts(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID
    ) -> list[str]:
        """Every stored chunk text of one document (to drop its cached embeddings)."""
        flt = models.Filter(
            must=[_match("tenant_id", tenant_id), _match("kb_id", kb_id), _match("doc_id", doc_id)]
        )

        def run() -> list[str]:
            if not self._client.collection_exists(collection):
                return []
            texts: list[str] = []
            offset: Any = None
            while True:
                points, offset = self._client.scroll(
                    collection,
                    scroll_filter=flt,
                    limit=256,
                    offset=offset,
                    with_payload=["text"],
                    with_vectors=False,
                )
                texts.extend(str((p.payload or {}).get("text", "")) for p in points)
                if offset is None:
                    return texts

        return await self._call(run)

    async def search(
        self,
        collection: str,
        *,
        tenant_id: uuid.UUID,
        kb_ids: Sequence[uuid.UUID],
        dense: list[float] | None,
        sparse: SparseVector | None,
        limit: int,
    ) -> tuple[list[Match], list[Match]]:
        """Dense and BM25 candidates in one round trip, each filtered by tenant and KB."""
        flt = models.Filter(
            must=[
                _match("tenant_id", tenant_id),
                models.FieldCondition(
                    key="kb_id", match=models.MatchAny(any=[str(k) for k in kb_ids])
                ),
            ]
        )
        requests: list[models.QueryRequest] = []
        if dense is not None:
            requests.append(
                models.QueryRequest(
                    query=dense, using=DENSE, filter=flt, limit=limit, with_payload=True
                )
            )
        if sparse is not None and sparse.indices:
            requests.append(
                models.QueryRequest(
                    query=models.SparseVector(indices=sparse.indices, values=sparse.values),
                    using=SPARSE,
                    filter=flt,
                    limit=limit,
                    with_payload=True,
                )
            )

        def run() -> list[list[Match]]:
            if not requests or not self._client.collection_exists(collection):
                return [[] for _ in requests]
            answers = self._client.query_batch_points(collection, requests=requests)
            return [[Match(p.payload or {}, p.score) for p in a.points] for a in answers]

        return split_arms(await self._call(run), dense)


def _match(key: str, value: uuid.UUID) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=str(value)))
