"""The embedded profile's vector index: Qdrant Edge (``qdrant-edge-py``), Qdrant's engine
as an in-process library, one shard (a folder) per collection under ``qdrant_path``.

Same collections, payload, payload indexes and filters as the server (rag/index.py), so
search behaves the same on both profiles. Differences, all measured
(bench/rag_latency.py):

- Points stay in Qdrant's plain (brute-force, in Rust) segments: ~30 ms per hybrid query
  at 100k chunks in one tenant. Building HNSW (``optimize``) halves that but holds the
  GIL for a minute or more per 100k points, which would freeze the server, so it is
  never run while serving; ``polymodal admin index-optimize`` runs it with the server
  stopped.
- A query holds the GIL while it runs (the binding does not release it), so the lock
  below costs nothing extra; calls still go through a worker thread to keep one code
  path with the server client.
- BM25's IDF is computed over the tenant's own points (``IdfParams``), so another
  tenant's documents never shift a tenant's scores.
- The folder is locked by its write-ahead log: one process per folder. Celery ingestion
  needs a Qdrant server (rag/runtime.py refuses the combination).
- Writes are flushed to the segments at most every ``FLUSH_EVERY_S`` (the write-ahead log
  covers the gap, and is truncated by each flush), as Qdrant's server does.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from polymodal.rag.bm25 import SparseVector
from polymodal.rag.index import (
    DENSE,
    SPARSE,
    ChunkPoint,
    Match,
    chunk_payload,
    point_id,
    split_arms,
)

if TYPE_CHECKING:
    import qdrant_edge as qe

T = TypeVar("T")
_KEYWORDS = ("kb_id", "doc_id")
FLUSH_EVERY_S = 5.0


def _edge() -> Any:
    """The module, imported on first use (a 35 MB extension start-up need not load)."""
    import qdrant_edge

    return qdrant_edge


def _match(key: str, value: uuid.UUID) -> qe.FieldCondition:
    m = _edge()
    return m.FieldCondition(key=key, match=m.MatchValue(str(value)))  # type: ignore[no-any-return]


class EdgeIndex:
    """``path=None`` keeps the shards in a temporary folder removed on close (benchmarks
    and tests)."""

    local = True

    def __init__(self, *, path: Path | None) -> None:
        self._tmp = path is None
        self._root = path if path is not None else Path(tempfile.mkdtemp(prefix="pm-edge-"))
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.Lock()
        self._flushed: dict[str, float] = {}

    def _sync(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._sync, fn)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
        if self._tmp:
            shutil.rmtree(self._root, ignore_errors=True)

    # --- shards ------------------------------------------------------------------------------

    def _written(self, name: str, shard: qe.EdgeShard) -> None:
        """After a write (under the lock): flush when the last flush is old enough."""
        now = time.monotonic()
        if now - self._flushed.get(name, 0.0) >= FLUSH_EVERY_S:
            shard.flush()
            self._flushed[name] = now

    def _folder(self, name: str) -> Path:
        return self._root / name

    def _open(self, name: str, dimensions: int | None) -> qe.EdgeShard | None:
        """The collection's shard; created when ``dimensions`` is given, else None when it
        does not exist yet. Called under the lock."""
        cached = self._shards.get(name)
        if cached is not None:
            return cached
        m = _edge()
        shard: qe.EdgeShard
        folder = self._folder(name)
        if (folder / "wal").exists():
            shard = m.EdgeShard.load(str(folder))
        elif dimensions is None:
            return None
        else:
            folder.mkdir(parents=True, exist_ok=True)
            shard = m.EdgeShard.create(
                str(folder),
                m.EdgeConfig(
                    vectors={
                        DENSE: m.EdgeVectorParams(size=dimensions, distance=m.Distance.Cosine)
                    },
                    sparse_vectors={SPARSE: m.EdgeSparseVectorParams(modifier=m.Modifier.Idf)},
                    # One search thread: the query holds the GIL anyway, and the gateway
                    # and the embedding model share this CPU.
                    max_search_threads=1,
                ),
            )
            ops = [
                m.UpdateOperation.create_field_index(
                    "tenant_id", m.KeywordIndexParams(is_tenant=True)
                ),
                *(
                    m.UpdateOperation.create_field_index(f, m.KeywordIndexParams())
                    for f in _KEYWORDS
                ),
                m.UpdateOperation.create_field_index(
                    "chunk_no", m.IntegerIndexParams(lookup=False, range=True)
                ),
            ]
            for op in ops:
                shard.update(op)
        self._shards[name] = shard
        return shard

    # --- writes -------------------------------------------------------------------------------

    async def upsert(self, collection: str, dimensions: int, points: Sequence[ChunkPoint]) -> None:
        m = _edge()
        batch = [
            m.Point(
                id=point_id(p.doc_id, p.chunk_no),
                vector={
                    DENSE: p.dense,
                    SPARSE: m.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=chunk_payload(p),
            )
            for p in points
        ]

        def run() -> None:
            shard = self._open(collection, dimensions)
            assert shard is not None
            shard.update(m.UpdateOperation.upsert_points(batch))
            self._written(collection, shard)

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
        m = _edge()
        must: list[Any] = [_match("tenant_id", tenant_id), _match("kb_id", kb_id)]
        if doc_id is not None:
            must.append(_match("doc_id", doc_id))
        if from_chunk is not None:
            must.append(m.FieldCondition(key="chunk_no", range=m.RangeFloat(gte=from_chunk)))

        def run() -> None:
            shard = self._open(collection, None)
            if shard is not None:
                shard.update(m.UpdateOperation.delete_points_by_filter(m.Filter(must=must)))
                self._written(collection, shard)

        await self._call(run)

    # --- reads --------------------------------------------------------------------------------

    async def count(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID | None
    ) -> int:
        m = _edge()
        must: list[Any] = [_match("tenant_id", tenant_id), _match("kb_id", kb_id)]
        if doc_id is not None:
            must.append(_match("doc_id", doc_id))

        def run() -> int:
            shard = self._open(collection, None)
            if shard is None:
                return 0
            return int(shard.count(m.CountRequest(exact=True, filter=m.Filter(must=must))))

        return await self._call(run)

    async def chunk_texts(
        self, collection: str, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID
    ) -> list[str]:
        m = _edge()
        flt = m.Filter(
            must=[_match("tenant_id", tenant_id), _match("kb_id", kb_id), _match("doc_id", doc_id)]
        )

        def run() -> list[str]:
            shard = self._open(collection, None)
            if shard is None:
                return []
            texts: list[str] = []
            offset: Any = None
            while True:
                records, offset = shard.scroll(
                    m.ScrollRequest(
                        offset=offset, limit=256, filter=flt, with_payload=True, with_vector=False
                    )
                )
                texts.extend(str((r.payload or {}).get("text", "")) for r in records)
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
        m = _edge()
        tenant = m.Filter(must=[_match("tenant_id", tenant_id)])
        flt = m.Filter(
            must=[
                _match("tenant_id", tenant_id),
                m.FieldCondition(key="kb_id", match=m.MatchAny([str(k) for k in kb_ids])),
            ]
        )
        requests: list[Any] = []
        if dense is not None:
            requests.append(
                m.QueryRequest(
                    limit=limit,
                    query=m.Query.Nearest(dense, using=DENSE),
                    filter=flt,
                    with_payload=True,
                )
            )
        if sparse is not None and sparse.indices:
            requests.append(
                m.QueryRequest(
                    limit=limit,
                    query=m.Query.Nearest(
                        m.SparseVector(indices=sparse.indices, values=sparse.values), using=SPARSE
                    ),
                    filter=flt,
                    with_payload=True,
                    params=m.SearchParams(idf=m.IdfParams(corpus=tenant)),
                )
            )

        def run() -> list[list[Match]]:
            shard = self._open(collection, None)
            if not requests or shard is None:
                return [[] for _ in requests]
            answers = shard.query_batch(m.QueryBatchRequest(requests))
            return [[Match(dict(p.payload or {}), p.score) for p in a] for a in answers]

        return split_arms(await self._call(run), dense)

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self) -> dict[str, tuple[int, int]]:
        """Build HNSW and merge segments in every collection (slow; holds the GIL: run it
        with the server stopped). Returns points and indexed vectors per collection."""
        out: dict[str, tuple[int, int]] = {}
        if not self._root.exists():
            return out
        for folder in sorted(p for p in self._root.iterdir() if (p / "wal").exists()):
            with self._lock:
                shard = self._open(folder.name, None)
                assert shard is not None
                shard.optimize()
                info = shard.info()
                out[folder.name] = (info.points_count, info.indexed_vectors_count)
        return out
