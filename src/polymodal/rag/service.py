"""Knowledge bases: create/list/update/delete, add documents (upload or URL), follow their
ingestion, delete them, search. Authorization is checked here (kb:read / kb:write).

A document is parsed when it arrives, so bad input (unsupported, corrupt, empty, too
large, a refused URL) is a 4xx before anything is stored; then its text and an
ingestion job are written in one transaction, and the job id goes to the queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.db import knowledge as repo
from polymodal.db import repositories
from polymodal.db.models import utcnow
from polymodal.db.models_rag import IngestJob, KbDocument, KnowledgeBase
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Conflict, InvalidRequest, NotFound
from polymodal.domain.principal import Principal
from polymodal.domain.rag import Retrieval
from polymodal.observability.logging import get_logger
from polymodal.rag import fetch as fetching
from polymodal.rag import parsers
from polymodal.rag.embedding import EmbeddingCache, EmbeddingModels, cache_key
from polymodal.rag.errors import DocumentTooLarge, DuplicateDocument
from polymodal.rag.index import VectorIndex, collection_name
from polymodal.rag.jobs import JobQueue
from polymodal.rag.search import HybridRetriever, Mode
from polymodal.tenancy.rbac import Permission, require

log = get_logger("polymodal.rag")


@dataclass(frozen=True, slots=True)
class KbInfo:
    id: uuid.UUID
    name: str
    description: str
    embedding_model: str
    dimensions: int
    version: int
    documents: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DocInfo:
    id: uuid.UUID
    kb_id: uuid.UUID
    title: str
    source: str
    source_kind: str
    format: str
    content_hash: str
    size_bytes: int
    chars: int
    status: str
    error: str | None
    chunks: int
    chunks_total: int
    chunks_done: int
    job_id: uuid.UUID | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    unchanged: bool = False  # re-upload of identical content: nothing was queued

    @property
    def progress(self) -> float:
        if self.status == "ready":
            return 1.0
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


def _doc_info(doc: KbDocument, job: IngestJob | None, *, unchanged: bool = False) -> DocInfo:
    return DocInfo(
        id=doc.id,
        kb_id=doc.kb_id,
        title=doc.title,
        source=doc.source,
        source_kind=doc.source_kind,
        format=doc.format,
        content_hash=doc.content_hash,
        size_bytes=doc.size_bytes,
        chars=doc.chars,
        status=doc.status,
        error=doc.error,
        chunks=doc.chunks,
        chunks_total=job.chunks_total if job else doc.chunks,
        chunks_done=job.chunks_done if job else doc.chunks,
        job_id=job.id if job else None,
        attempts=job.attempts if job else 0,
        created_at=doc.created_at,
        updated_at=doc.updated_at,
        unchanged=unchanged,
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A parsed document not yet stored."""

    source: str
    kind: Literal["upload", "url"]
    fmt: str
    parsed: parsers.ParsedDocument
    digest: str
    size: int


class KnowledgeService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        models: EmbeddingModels,
        index: VectorIndex,
        cache: EmbeddingCache,
        retriever: HybridRetriever,
        queue: JobQueue,
        default_embedding_model: str,
        max_document_bytes: int,
        max_text_chars: int,
        fetch_policy: fetching.FetchPolicy,
        lookup: fetching.Lookup = fetching.system_lookup,
    ) -> None:
        self._sessions = sessions
        self._models = models
        self._index = index
        self._cache = cache
        self.retriever = retriever
        self.queue = queue
        self._default_model = default_embedding_model
        self._max_bytes = max_document_bytes
        self._max_chars = max_text_chars
        self._fetch_policy = fetch_policy
        self._lookup = lookup

    # --- knowledge bases ---------------------------------------------------------------------

    async def _kb(self, s: AsyncSession, tenant_id: uuid.UUID, kb_id: uuid.UUID) -> KnowledgeBase:
        kb = await repo.get_kb(s, tenant_id=tenant_id, kb_id=kb_id)
        if kb is None:
            # Another tenant's KB is indistinguishable from one that does not exist.
            raise NotFound(f"knowledge base {kb_id} does not exist.", code="kb_not_found")
        return kb

    async def _info(self, s: AsyncSession, kb: KnowledgeBase) -> KbInfo:
        count = await repo.count_documents(s, tenant_id=kb.tenant_id, kb_id=kb.id)
        return KbInfo(
            kb.id,
            kb.name,
            kb.description,
            kb.embedding_model,
            kb.dimensions,
            kb.version,
            count,
            kb.created_at,
            kb.updated_at,
        )

    async def create_kb(
        self,
        principal: Principal,
        *,
        name: str,
        description: str = "",
        embedding_model: str | None = None,
    ) -> KbInfo:
        require(principal, Permission.KB_WRITE)
        model = embedding_model or self._default_model
        d = self._models.resolve(model)
        if not d.dimensions:
            raise InvalidRequest(f"embedding_model: '{d.id}' does not declare its dimensions.")
        tenant_id = principal.tenant_id
        try:
            async with tenant_session(self._sessions, tenant_id) as s, s.begin():
                if await repo.kb_by_name(s, tenant_id=tenant_id, name=name) is not None:
                    raise Conflict(f"name: a knowledge base named '{name}' already exists.")
                kb = await repo.create_kb(
                    s,
                    tenant_id=tenant_id,
                    name=name,
                    description=description,
                    embedding_model=d.id,
                    dimensions=d.dimensions,
                    created_by=principal.user_id,
                )
                return await self._info(s, kb)
        except IntegrityError as e:  # a concurrent create with the same name
            raise Conflict(f"name: a knowledge base named '{name}' already exists.") from e

    async def list_kbs(self, principal: Principal) -> list[KbInfo]:
        require(principal, Permission.KB_READ)
        async with tenant_session(self._sessions, principal.tenant_id) as s:
            kbs = await repo.list_kbs(s, tenant_id=principal.tenant_id)
            return [await self._info(s, kb) for kb in kbs]

    async def get_kb(self, principal: Principal, kb_id: uuid.UUID) -> KbInfo:
        require(principal, Permission.KB_READ)
        async with tenant_session(self._sessions, principal.tenant_id) as s:
            return await self._info(s, await self._kb(s, principal.tenant_id, kb_id))

    async def update_kb(
        self,
        principal: Principal,
        kb_id: uuid.UUID,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> KbInfo:
        """Name and description only: the embedding model is fixed at creation."""
        require(principal, Permission.KB_WRITE)
        tenant_id = principal.tenant_id
        try:
            async with tenant_session(self._sessions, tenant_id) as s, s.begin():
                kb = await self._kb(s, tenant_id, kb_id)
                if name is not None and name != kb.name:
                    if await repo.kb_by_name(s, tenant_id=tenant_id, name=name) is not None:
                        raise Conflict(f"name: a knowledge base named '{name}' already exists.")
                    kb.name = name
                if description is not None:
                    kb.description = description
                kb.updated_at = utcnow()
                return await self._info(s, kb)
        except IntegrityError as e:
            raise Conflict(f"name: a knowledge base named '{name}' already exists.") from e

    async def delete_kb(self, principal: Principal, kb_id: uuid.UUID) -> None:
        require(principal, Permission.KB_WRITE)
        tenant_id = principal.tenant_id
        async with tenant_session(self._sessions, tenant_id) as s:
            kb = await self._kb(s, tenant_id, kb_id)
            docs = await repo.list_documents(s, tenant_id=tenant_id, kb_id=kb_id)
        collection = collection_name(kb.embedding_model, kb.dimensions)
        for doc in docs:
            await self._drop_cached(tenant_id, kb, doc.id, collection)
        # Vectors first: a failure leaves the KB listed (and deletable again), never vectors
        # of a KB that no longer exists.
        await self._index.delete(collection, tenant_id=tenant_id, kb_id=kb_id)
        async with tenant_session(self._sessions, tenant_id) as s, s.begin():
            await repo.delete_kb(s, tenant_id=tenant_id, kb_id=kb_id)
            await repositories.append_audit(
                s,
                tenant_id=tenant_id,
                actor=f"user:{principal.user_id}",
                action="kb.delete",
                target=str(kb_id),
                data={"name": kb.name, "documents": len(docs)},
                at=utcnow(),
            )

    # --- documents -----------------------------------------------------------------------------

    async def add_upload(
        self,
        principal: Principal,
        kb_id: uuid.UUID,
        *,
        filename: str,
        content_type: str | None,
        data: bytes,
    ) -> DocInfo:
        return (await self.add_uploads(principal, kb_id, [(filename, content_type, data)]))[0]

    async def add_uploads(
        self,
        principal: Principal,
        kb_id: uuid.UUID,
        files: Sequence[tuple[str, str | None, bytes]],
    ) -> list[DocInfo]:
        """Add uploaded files (name, media type, bytes) all or nothing: every file is
        checked and parsed before any is stored."""
        require(principal, Permission.KB_WRITE)
        await self._check_kb(principal, kb_id)
        prepared: list[_Prepared] = []
        for filename, content_type, data in files:
            if len(data) > self._max_bytes:
                raise DocumentTooLarge(
                    f"file: {filename} is {len(data)} bytes; the limit is {self._max_bytes}."
                )
            name = (filename or "").strip().replace("\\", "/").rsplit("/", 1)[-1][:255]
            if not name:
                raise InvalidRequest("file: the upload has no file name.", code="missing_filename")
            fmt = parsers.detect_format(name, content_type)
            prepared.append(await self._prepare(name, "upload", fmt, data))
        return await self._store(principal, kb_id, prepared)

    async def add_url(self, principal: Principal, kb_id: uuid.UUID, *, url: str) -> DocInfo:
        require(principal, Permission.KB_WRITE)
        await self._check_kb(principal, kb_id)
        if len(url) > 2048:
            raise InvalidRequest("url: longer than 2048 characters.")
        fetched = await fetching.fetch(url, self._fetch_policy, lookup=self._lookup)
        path = fetched.url.split("?", 1)[0].split("#", 1)[0]
        fmt = parsers.detect_format(path.rsplit("/", 1)[-1], fetched.content_type or "text/html")
        if fmt not in ("pdf", "docx") and fetched.content_type.startswith("text/html"):
            fmt = "html"  # a page named /guide.md served as HTML is HTML
        prepared = await self._prepare(url, "url", fmt, fetched.data)
        return (await self._store(principal, kb_id, [prepared]))[0]

    async def _check_kb(self, principal: Principal, kb_id: uuid.UUID) -> None:
        async with tenant_session(self._sessions, principal.tenant_id) as s:
            await self._kb(s, principal.tenant_id, kb_id)

    async def _prepare(
        self, source: str, kind: Literal["upload", "url"], fmt: str, data: bytes
    ) -> _Prepared:
        parsed = await asyncio.to_thread(
            parsers.parse, data, filename=source, fmt=fmt, max_chars=self._max_chars
        )
        digest = hashlib.sha256(parsed.text.encode("utf-8", "surrogatepass")).hexdigest()
        return _Prepared(source, kind, fmt, parsed, digest, len(data))

    async def _store(
        self, principal: Principal, kb_id: uuid.UUID, prepared: Sequence[_Prepared]
    ) -> list[DocInfo]:
        tenant_id = principal.tenant_id
        infos: list[DocInfo] = []
        queued: list[uuid.UUID] = []
        async with tenant_session(self._sessions, tenant_id) as s, s.begin():
            kb = await repo.get_kb(s, tenant_id=tenant_id, kb_id=kb_id, lock=True)
            if kb is None:
                raise NotFound(f"knowledge base {kb_id} does not exist.", code="kb_not_found")
            for p in prepared:
                info, job_id = await self._store_one(s, principal, kb_id, p)
                infos.append(info)
                if job_id is not None:
                    queued.append(job_id)
        for job_id in queued:
            await self.queue.enqueue(tenant_id, job_id)
        return infos

    async def _store_one(
        self, s: AsyncSession, principal: Principal, kb_id: uuid.UUID, p: _Prepared
    ) -> tuple[DocInfo, uuid.UUID | None]:
        tenant_id = principal.tenant_id
        same = await repo.document_by_hash(
            s, tenant_id=tenant_id, kb_id=kb_id, content_hash=p.digest
        )
        if same is not None and same.source != p.source:
            raise DuplicateDocument(
                f"file: {p.source} has the same content as document {same.id} "
                f"('{same.source}') in this knowledge base."
            )
        doc = await repo.document_by_source(s, tenant_id=tenant_id, kb_id=kb_id, source=p.source)
        if doc is not None and doc.content_hash == p.digest and doc.status != "failed":
            jobs = await repo.latest_jobs(s, tenant_id=tenant_id, doc_ids=[doc.id])
            return _doc_info(doc, jobs.get(doc.id), unchanged=True), None
        now = utcnow()
        if doc is None:
            doc = KbDocument(tenant_id=tenant_id, kb_id=kb_id, source=p.source, created_at=now)
            s.add(doc)
        doc.title = p.parsed.title or p.source.rsplit("/", 1)[-1]
        doc.source_kind, doc.format, doc.content_hash = p.kind, p.fmt, p.digest
        doc.size_bytes, doc.chars = p.size, len(p.parsed.text)
        doc.status, doc.error, doc.updated_at, doc.chunks = "queued", None, now, 0
        await s.flush()
        await repo.put_text(
            s,
            tenant_id=tenant_id,
            doc_id=doc.id,
            content_hash=p.digest,
            sections=[asdict(sec) for sec in p.parsed.sections],
        )
        job = await repo.create_job(
            s,
            tenant_id=tenant_id,
            kb_id=kb_id,
            doc_id=doc.id,
            content_hash=p.digest,
            created_by=principal.user_id,
        )
        return _doc_info(doc, job), job.id

    async def list_documents(self, principal: Principal, kb_id: uuid.UUID) -> list[DocInfo]:
        require(principal, Permission.KB_READ)
        tenant_id = principal.tenant_id
        async with tenant_session(self._sessions, tenant_id) as s:
            await self._kb(s, tenant_id, kb_id)
            docs = await repo.list_documents(s, tenant_id=tenant_id, kb_id=kb_id)
            jobs = await repo.latest_jobs(s, tenant_id=tenant_id, doc_ids=[d.id for d in docs])
        return [_doc_info(d, jobs.get(d.id)) for d in docs]

    async def get_document(
        self, principal: Principal, kb_id: uuid.UUID, doc_id: uuid.UUID
    ) -> DocInfo:
        require(principal, Permission.KB_READ)
        tenant_id = principal.tenant_id
        async with tenant_session(self._sessions, tenant_id) as s:
            await self._kb(s, tenant_id, kb_id)
            doc = await repo.get_document(s, tenant_id=tenant_id, kb_id=kb_id, doc_id=doc_id)
            if doc is None:
                raise NotFound(f"document {doc_id} does not exist.", code="document_not_found")
            jobs = await repo.latest_jobs(s, tenant_id=tenant_id, doc_ids=[doc.id])
        return _doc_info(doc, jobs.get(doc.id))

    async def delete_document(
        self, principal: Principal, kb_id: uuid.UUID, doc_id: uuid.UUID
    ) -> None:
        """Remove the document's vectors, its cached embeddings and its stored text."""
        require(principal, Permission.KB_WRITE)
        tenant_id = principal.tenant_id
        async with tenant_session(self._sessions, tenant_id) as s:
            kb = await self._kb(s, tenant_id, kb_id)
            doc = await repo.get_document(s, tenant_id=tenant_id, kb_id=kb_id, doc_id=doc_id)
            if doc is None:
                raise NotFound(f"document {doc_id} does not exist.", code="document_not_found")
        collection = collection_name(kb.embedding_model, kb.dimensions)
        await self._drop_cached(tenant_id, kb, doc_id, collection)
        await self._index.delete(collection, tenant_id=tenant_id, kb_id=kb_id, doc_id=doc_id)
        async with tenant_session(self._sessions, tenant_id) as s, s.begin():
            await repo.delete_document(s, tenant_id=tenant_id, doc_id=doc_id)
            await repo.bump_version(s, tenant_id=tenant_id, kb_id=kb_id)
            await repositories.append_audit(
                s,
                tenant_id=tenant_id,
                actor=f"user:{principal.user_id}",
                action="document.delete",
                target=str(doc_id),
                data={"kb_id": str(kb_id)},
                at=utcnow(),
            )

    async def _drop_cached(
        self, tenant_id: uuid.UUID, kb: KnowledgeBase, doc_id: uuid.UUID, collection: str
    ) -> None:
        texts = await self._index.chunk_texts(
            collection, tenant_id=tenant_id, kb_id=kb.id, doc_id=doc_id
        )
        keys = [cache_key(tenant_id, kb.embedding_model, "document", t) for t in texts]
        await self._cache.delete_many(keys)

    # --- search ----------------------------------------------------------------------------------

    async def search(
        self,
        principal: Principal,
        kb_ids: Sequence[uuid.UUID],
        *,
        query: str,
        top_k: int = 8,
        mode: Mode = "hybrid",
    ) -> Retrieval:
        require(principal, Permission.KB_READ)
        feature = f"kb:{kb_ids[0]}" if len(kb_ids) == 1 else "kb:search"
        return await self.retriever.search(
            tenant_id=principal.tenant_id,
            kb_ids=kb_ids,
            query=query,
            top_k=top_k,
            feature=feature,
            user_id=principal.user_id,
            mode=mode,
        )
