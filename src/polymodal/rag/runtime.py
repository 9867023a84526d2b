"""Builds the knowledge-base stack from settings, for the app factory, the Celery
worker and the benchmarks alike (one place knows how the parts fit)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.cache.memory import MemoryCache
from polymodal.rag import fetch as fetching
from polymodal.rag.bm25 import Bm25
from polymodal.rag.edge_index import EdgeIndex
from polymodal.rag.embedding import Embedder, EmbeddingCache, EmbeddingModels
from polymodal.rag.index import QdrantClientIndex, VectorIndex
from polymodal.rag.ingest import IngestConfig, Ingestor
from polymodal.rag.jobs import InProcessRunner, JobQueue
from polymodal.rag.search import HybridRetriever, SearchConfig
from polymodal.rag.service import KnowledgeService
from polymodal.settings import Settings


@dataclass
class RagStack:
    index: VectorIndex
    cache: EmbeddingCache
    embedder: Embedder
    ingestor: Ingestor
    retriever: HybridRetriever

    def close(self) -> None:
        self.index.close()


def embedding_store(settings: Settings, shared: Cache) -> Cache | None:
    """The process's shared cache when it is Redis; else None (an LRU of its own)."""
    return shared if settings.redis_url and shared.name == "redis" else None


def uses_celery(settings: Settings) -> bool:
    return settings.celery_ingest


def check_queue(settings: Settings) -> None:
    """Refuses Celery ingestion over an embedded index: workers would write to folders
    that ``polymodal serve`` never searches."""
    if settings.ingest_queue == "celery" and settings.qdrant_url is None:
        raise RuntimeError(
            "ingest_queue=celery needs qdrant_url: the embedded index is a folder held by "
            "one process, so Celery workers cannot write what `polymodal serve` searches. "
            "Set POLYMODAL_QDRANT_URL, or POLYMODAL_INGEST_QUEUE=in-process."
        )


def open_index(settings: Settings) -> VectorIndex:
    if settings.qdrant_url is not None:
        return QdrantClientIndex(
            url=settings.qdrant_url, path=None, timeout_s=settings.qdrant_timeout_s
        )
    path = settings.embedded_index_path
    if settings.qdrant_embedded_engine == "client":
        return QdrantClientIndex(url=None, path=path, timeout_s=settings.qdrant_timeout_s)
    return EdgeIndex(path=path)


def build(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    models: EmbeddingModels,
    cache: Cache | None = None,
    index: VectorIndex | None = None,
) -> RagStack:
    """``cache``: where embeddings are cached, the shared Redis cache in production;
    unset gets a bounded in-process LRU of its own, sized for vectors."""
    if cache is None:
        cache = MemoryCache(max_entries=settings.embedding_cache_entries)
    embed_cache = EmbeddingCache(cache, ttl_s=settings.embedding_cache_ttl_s)
    embedder = Embedder(models, embed_cache, batch_size=settings.embedding_batch_size)
    index = index or open_index(settings)
    bm25 = Bm25(k1=settings.bm25_k1, b=settings.bm25_b, avg_len=settings.bm25_avg_chunk_tokens)
    ingestor = Ingestor(
        sessions=sessions,
        models=models,
        embedder=embedder,
        index=index,
        bm25=bm25,
        config=IngestConfig(
            chunk_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
            batch_size=settings.embedding_batch_size,
            lease_s=settings.ingest_job_lease_s,
            max_attempts=settings.ingest_max_attempts,
        ),
    )
    retriever = HybridRetriever(
        sessions=sessions,
        embedder=embedder,
        index=index,
        bm25=bm25,
        config=SearchConfig(candidates=settings.search_candidates, rrf_k=settings.rrf_k),
    )
    return RagStack(index, embed_cache, embedder, ingestor, retriever)


def runner(
    settings: Settings, stack: RagStack, sessions: async_sessionmaker[AsyncSession]
) -> InProcessRunner:
    return InProcessRunner(
        ingestor=stack.ingestor,
        sessions=sessions,
        concurrency=settings.ingest_concurrency,
        lease_s=settings.ingest_job_lease_s,
    )


def fetch_policy(settings: Settings) -> fetching.FetchPolicy:
    return fetching.FetchPolicy(
        timeout_s=settings.fetch_timeout_s,
        connect_timeout_s=settings.fetch_connect_timeout_s,
        max_redirects=settings.fetch_max_redirects,
        max_bytes=settings.ingest_max_document_bytes,
        allow_networks=fetching.FetchPolicy.networks(settings.fetch_allow_networks),
    )


def service(
    settings: Settings,
    stack: RagStack,
    *,
    sessions: async_sessionmaker[AsyncSession],
    models: EmbeddingModels,
    queue: JobQueue,
    lookup: fetching.Lookup = fetching.system_lookup,
) -> KnowledgeService:
    return KnowledgeService(
        sessions=sessions,
        models=models,
        index=stack.index,
        cache=stack.cache,
        retriever=stack.retriever,
        queue=queue,
        default_embedding_model=settings.default_embedding_model,
        max_document_bytes=settings.ingest_max_document_bytes,
        max_text_chars=settings.ingest_max_text_chars,
        fetch_policy=fetch_policy(settings),
        lookup=lookup,
    )
