"""One ingestion job: the stored text of a document -> chunks -> embeddings -> Qdrant.

The job row is the source of truth. ``run`` is idempotent and resumable:

- a finished, failed or superseded job is left as it is (a duplicate delivery is a no-op);
- a job another worker holds (fresh heartbeat) is not touched: ``busy``;
- a job whose worker died (stale heartbeat) is taken over and resumes after
  ``chunks_done`` (chunking is deterministic and point ids are ``(doc, chunk_no)``, so
  re-writing a batch overwrites instead of duplicating);
- a transient failure (provider down, Qdrant unreachable) puts the job back to
  ``queued`` and answers ``retry``; a permanent one, or the last attempt, fails the
  document and removes whatever of it was indexed.

Progress (``chunks_done``/``chunks_total``) and the heartbeat are written after every
batch, in the same transaction that checks the job is still current: a document that
was replaced or deleted meanwhile stops its old job at the next batch.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import knowledge as repo
from polymodal.db.models import utcnow
from polymodal.db.models_rag import IngestJob
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import InvalidRequest, PolymodalError, ProviderError
from polymodal.observability.logging import get_logger
from polymodal.rag import tokenizers
from polymodal.rag.bm25 import Bm25
from polymodal.rag.chunking import Chunk, chunk_sections
from polymodal.rag.embedding import Embedder, EmbeddingModels, acting_for
from polymodal.rag.index import ChunkPoint, VectorIndex, collection_name
from polymodal.rag.parsers import Section

Outcome = Literal["done", "failed", "retry", "busy", "skipped"]
log = get_logger("polymodal.rag.ingest")


@dataclass(frozen=True, slots=True)
class IngestConfig:
    chunk_tokens: int = 512
    overlap_tokens: int = 50
    batch_size: int = 32
    lease_s: float = 120.0
    max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class _Work:
    sections: list[Section]
    model: str
    dimensions: int
    title: str


_NOTHING = _Work([], "", 0, "")


class _Stop(Exception):
    """The job stopped being current (replaced, deleted) mid-way."""


def feature_tag(kb_id: uuid.UUID) -> str:
    return f"kb:{kb_id}"


def chunk_limit(config: IngestConfig, tokenizer: tokenizers.Tokenizer, window: int) -> int:
    # A few tokens of headroom: a chunk's text re-tokenized alone may count one or two more
    # than its slice of the whole section did.
    return max(16, min(config.chunk_tokens, tokenizer.max_tokens() - 3, window - 8))


class Ingestor:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: EmbeddingModels,
        embedder: Embedder,
        index: VectorIndex,
        bm25: Bm25,
        config: IngestConfig,
    ) -> None:
        self._sessions = sessions
        self._models = models
        self._embedder = embedder
        self._index = index
        self._bm25 = bm25
        self._config = config

    async def _claim(
        self, tenant_id: uuid.UUID, job_id: uuid.UUID, takeover: bool
    ) -> tuple[Outcome | None, IngestJob | None, _Work]:
        async with tenant_session(self._sessions, tenant_id) as s, s.begin():
            job = await repo.get_job(s, tenant_id=tenant_id, job_id=job_id, lock=True)
            if job is None or job.status in ("done", "failed", "superseded"):
                return "skipped", job, _NOTHING
            now = utcnow()
            fresh = job.heartbeat_at is not None and job.heartbeat_at > repo.stale_before(
                now, self._config.lease_s
            )
            if job.status == "running" and fresh and not takeover:
                return "busy", job, _NOTHING
            kb = await repo.get_kb(s, tenant_id=tenant_id, kb_id=job.kb_id)
            doc = await repo.get_document(
                s, tenant_id=tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
            )
            text = await repo.get_text(s, tenant_id=tenant_id, doc_id=job.doc_id)
            if kb is None or doc is None or text is None or text.content_hash != job.content_hash:
                job.status, job.finished_at = "superseded", now
                return "skipped", job, _NOTHING
            job.status, job.attempts, job.heartbeat_at, job.error = (
                "running",
                job.attempts + 1,
                now,
                None,
            )
            try:
                sections = [
                    Section(str(x["text"]), x.get("page"), x.get("section")) for x in text.sections
                ]
            except (KeyError, TypeError):  # not something a retry can fix
                message = "the document's stored text is unreadable; upload it again"
                job.status, job.error, job.finished_at = "failed", message, now
                doc.status, doc.error, doc.chunks = "failed", message, 0
                return "failed", job, _NOTHING
            doc.status, doc.error, doc.updated_at = "processing", None, now
            return None, job, _Work(sections, kb.embedding_model, kb.dimensions, doc.title)

    async def _progress(
        self, tenant_id: uuid.UUID, job_id: uuid.UUID, *, total: int, done: int
    ) -> None:
        async with tenant_session(self._sessions, tenant_id) as s, s.begin():
            job = await repo.get_job(s, tenant_id=tenant_id, job_id=job_id, lock=True)
            if job is None or job.status != "running":
                raise _Stop
            job.chunks_total, job.chunks_done, job.heartbeat_at = total, done, utcnow()

    async def run(
        self, tenant_id: uuid.UUID, job_id: uuid.UUID, *, takeover: bool = False
    ) -> Outcome:
        """Run (or resume) one job. ``takeover``: the caller knows a ``running`` row is an
        orphan (the in-process runner at start-up) and need not wait out its lease."""
        outcome, job, work = await self._claim(tenant_id, job_id, takeover)
        if outcome is not None or job is None:
            return outcome or "skipped"
        collection = collection_name(work.model, work.dimensions)
        try:
            chunks = await self._chunk(work.model, work.sections)
            await self._write(job, chunks, collection, work)
        except _Stop:
            await self._cleanup_if_gone(job, collection)
            return "skipped"
        except Exception as e:
            return await self._failed(job, e, collection)
        return await self._finish(job, len(chunks), collection)

    async def _chunk(self, model: str, sections: list[Section]) -> list[Chunk]:
        d = self._models.resolve(model)
        tok = tokenizers.for_deployment(d)
        size = chunk_limit(self._config, tok, d.context_window)
        return await asyncio.to_thread(
            chunk_sections, sections, tok, size=size, overlap=self._config.overlap_tokens
        )

    async def _write(
        self, job: IngestJob, chunks: list[Chunk], collection: str, work: _Work
    ) -> None:
        principal = acting_for(job.tenant_id, job.created_by)
        total = len(chunks)
        start = min(job.chunks_done, total) if job.chunks_total == total else 0
        await self._progress(job.tenant_id, job.id, total=total, done=start)
        step = self._config.batch_size
        for lo in range(start, total, step):
            batch = chunks[lo : lo + step]
            vectors = await self._embedder.embed(
                principal=principal,
                feature=feature_tag(job.kb_id),
                model=work.model,
                texts=[c.text for c in batch],
                kind="document",
            )
            points = [
                ChunkPoint(
                    tenant_id=job.tenant_id,
                    kb_id=job.kb_id,
                    doc_id=job.doc_id,
                    chunk_no=c.chunk_no,
                    dense=v,
                    sparse=self._bm25.document(c.text),
                    payload={
                        "text": c.text,
                        "title": work.title,
                        "page": c.page,
                        "section": c.section,
                        "char_start": c.char_start,
                        "char_end": c.char_end,
                        "tokens": c.tokens,
                    },
                )
                for c, v in zip(batch, vectors, strict=True)
            ]
            await self._index.upsert(collection, work.dimensions, points)
            await self._progress(job.tenant_id, job.id, total=total, done=lo + len(batch))
        # A replaced document may have had more chunks than its new version.
        await self._index.delete(
            collection,
            tenant_id=job.tenant_id,
            kb_id=job.kb_id,
            doc_id=job.doc_id,
            from_chunk=total,
        )

    async def _finish(self, job: IngestJob, total: int, collection: str) -> Outcome:
        async with tenant_session(self._sessions, job.tenant_id) as s, s.begin():
            row = await repo.get_job(s, tenant_id=job.tenant_id, job_id=job.id, lock=True)
            if row is None or row.status != "running":
                stopped = True
            else:
                stopped = False
                now = utcnow()
                row.status, row.chunks_total, row.chunks_done = "done", total, total
                row.finished_at = row.heartbeat_at = now
                doc = await repo.get_document(
                    s, tenant_id=job.tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
                )
                if doc is not None:
                    doc.status, doc.chunks, doc.error, doc.updated_at = "ready", total, None, now
                await repo.bump_version(s, tenant_id=job.tenant_id, kb_id=job.kb_id)
        if stopped:
            await self._cleanup_if_gone(job, collection)
            return "skipped"
        log.info("ingested", tenant_id=str(job.tenant_id), doc_id=str(job.doc_id), chunks=total)
        return "done"

    async def _failed(self, job: IngestJob, error: Exception, collection: str) -> Outcome:
        permanent = isinstance(error, InvalidRequest | ValueError) or (
            isinstance(error, ProviderError) and not error.retryable
        )
        last = job.attempts >= self._config.max_attempts
        message = error.message if isinstance(error, PolymodalError) else type(error).__name__
        log.warning(
            "ingest failed",
            tenant_id=str(job.tenant_id),
            job_id=str(job.id),
            attempt=job.attempts,
            error=message,
            final=permanent or last,
        )
        async with tenant_session(self._sessions, job.tenant_id) as s, s.begin():
            row = await repo.get_job(s, tenant_id=job.tenant_id, job_id=job.id, lock=True)
            if row is None or row.status != "running":
                return "skipped"
            doc = await repo.get_document(
                s, tenant_id=job.tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
            )
            if permanent or last:
                row.status, row.error, row.finished_at = "failed", message[:1000], utcnow()
                if doc is not None:
                    doc.status, doc.error, doc.chunks = "failed", message[:1000], 0
            else:
                row.status, row.error, row.heartbeat_at = "queued", message[:1000], None
                if doc is not None:
                    doc.status = "queued"
        if permanent or last:
            # Nothing half-indexed stays searchable.
            await self._index.delete(
                collection, tenant_id=job.tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
            )
            return "failed"
        return "retry"

    async def _cleanup_if_gone(self, job: IngestJob, collection: str) -> None:
        """A deleted document's late batches must not linger in the index."""
        async with tenant_session(self._sessions, job.tenant_id) as s:
            doc = await repo.get_document(
                s, tenant_id=job.tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
            )
        if doc is None:
            await self._index.delete(
                collection, tenant_id=job.tenant_id, kb_id=job.kb_id, doc_id=job.doc_id
            )
