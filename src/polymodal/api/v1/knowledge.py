"""Knowledge bases: CRUD, documents (multipart upload or a URL), ingestion status,
search. Thin: parse, call the knowledge service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from polymodal.api.deps import CurrentPrincipal, State
from polymodal.domain.errors import InvalidRequest, ServiceUnavailable
from polymodal.domain.rag import Hit
from polymodal.rag.service import DocInfo, KbInfo, KnowledgeService

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])
MAX_FILES_PER_UPLOAD = 20


def _service(state: State) -> KnowledgeService:
    service = getattr(state, "knowledge", None)
    if service is None:
        raise ServiceUnavailable("knowledge bases are not enabled on this server.")
    return service  # type: ignore[no-any-return]


class KnowledgeBaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)
    embedding_model: str | None = Field(
        default=None,
        max_length=100,
        description="Embedding deployment, fixed for the KB's life; default: the server's.",
    )


class KnowledgeBaseUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)


class KnowledgeBasePublic(BaseModel):
    object: Literal["knowledge_base"] = "knowledge_base"
    id: uuid.UUID
    name: str
    description: str
    embedding_model: str
    dimensions: int
    version: int
    documents: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, kb: KbInfo) -> KnowledgeBasePublic:
        return cls(**{k: getattr(kb, k) for k in KbInfo.__dataclass_fields__})


class DocumentUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)


class DocumentPublic(BaseModel):
    object: Literal["knowledge_base.document"] = "knowledge_base.document"
    id: uuid.UUID
    knowledge_base_id: uuid.UUID
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
    progress: float
    chunks_done: int
    chunks_total: int
    job_id: uuid.UUID | None
    attempts: int
    unchanged: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: DocInfo) -> DocumentPublic:
        fields = {k: getattr(d, k) for k in DocInfo.__dataclass_fields__ if k != "kb_id"}
        return cls(knowledge_base_id=d.kb_id, progress=round(d.progress, 4), **fields)


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=8, ge=1, le=100)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"


class HitPublic(BaseModel):
    knowledge_base_id: uuid.UUID
    document_id: uuid.UUID
    chunk_no: int
    text: str
    score: float
    dense_score: float | None
    title: str
    page: int | None
    section: str | None
    char_start: int
    char_end: int

    @classmethod
    def of(cls, h: Hit) -> HitPublic:
        return cls(
            knowledge_base_id=h.kb_id,
            document_id=h.doc_id,
            chunk_no=h.chunk_no,
            text=h.text,
            score=h.score,
            dense_score=h.dense_score,
            title=h.title,
            page=h.page,
            section=h.section,
            char_start=h.char_start,
            char_end=h.char_end,
        )


def _list(items: list[Any]) -> dict[str, Any]:
    return {"object": "list", "data": items}


@router.post("", status_code=201)
async def create_kb(
    body: KnowledgeBaseCreate, principal: CurrentPrincipal, state: State
) -> KnowledgeBasePublic:
    kb = await _service(state).create_kb(
        principal,
        name=body.name.strip(),
        description=body.description,
        embedding_model=body.embedding_model,
    )
    return KnowledgeBasePublic.of(kb)


@router.get("")
async def list_kbs(principal: CurrentPrincipal, state: State) -> dict[str, Any]:
    kbs = await _service(state).list_kbs(principal)
    return _list([KnowledgeBasePublic.of(kb) for kb in kbs])


@router.get("/{kb_id}")
async def get_kb(
    kb_id: uuid.UUID, principal: CurrentPrincipal, state: State
) -> KnowledgeBasePublic:
    return KnowledgeBasePublic.of(await _service(state).get_kb(principal, kb_id))


@router.patch("/{kb_id}")
async def update_kb(
    kb_id: uuid.UUID, body: KnowledgeBaseUpdate, principal: CurrentPrincipal, state: State
) -> KnowledgeBasePublic:
    kb = await _service(state).update_kb(
        principal, kb_id, name=body.name, description=body.description
    )
    return KnowledgeBasePublic.of(kb)


@router.delete("/{kb_id}")
async def delete_kb(kb_id: uuid.UUID, principal: CurrentPrincipal, state: State) -> dict[str, Any]:
    await _service(state).delete_kb(principal, kb_id)
    return {"object": "knowledge_base.deleted", "id": str(kb_id), "deleted": True}


@router.post("/{kb_id}/documents", status_code=202)
async def add_documents(
    kb_id: uuid.UUID,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    state: State,
) -> dict[str, Any]:
    """``multipart/form-data`` with one or more ``file`` parts, or JSON ``{"url": ...}``.
    Each document is parsed now (bad input is a 4xx naming the file) and ingested by a
    job; poll ``GET .../documents/{id}`` for its status and progress."""
    service = _service(state)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = DocumentUrl.model_validate_json(await request.body())
        except ValidationError as e:
            where = ".".join(str(x) for x in e.errors()[0]["loc"]) or "body"
            raise InvalidRequest(f"{where}: {e.errors()[0]['msg']}.") from None
        doc = await service.add_url(principal, kb_id, url=body.url.strip())
        if doc.unchanged:
            response.status_code = 200
        return _list([DocumentPublic.of(doc)])
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "Send documents as multipart/form-data (field 'file') or JSON {\"url\": ...}.",
            code="unsupported_content_type",
        )
    form = await request.form(max_files=MAX_FILES_PER_UPLOAD, max_fields=MAX_FILES_PER_UPLOAD)
    try:
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise InvalidRequest("file: the upload has no 'file' part.", code="missing_file")
        uploads = [(f.filename or "", f.content_type, await f.read()) for f in files]
        # All or nothing: one bad file in a batch leaves nothing of the batch behind.
        accepted = await service.add_uploads(principal, kb_id, uploads)
    finally:
        await form.close()
    if all(d.unchanged for d in accepted):
        response.status_code = 200
    return _list([DocumentPublic.of(d) for d in accepted])


@router.get("/{kb_id}/documents")
async def list_documents(
    kb_id: uuid.UUID, principal: CurrentPrincipal, state: State
) -> dict[str, Any]:
    docs = await _service(state).list_documents(principal, kb_id)
    return _list([DocumentPublic.of(d) for d in docs])


@router.get("/{kb_id}/documents/{doc_id}")
async def get_document(
    kb_id: uuid.UUID, doc_id: uuid.UUID, principal: CurrentPrincipal, state: State
) -> DocumentPublic:
    return DocumentPublic.of(await _service(state).get_document(principal, kb_id, doc_id))


@router.delete("/{kb_id}/documents/{doc_id}")
async def delete_document(
    kb_id: uuid.UUID, doc_id: uuid.UUID, principal: CurrentPrincipal, state: State
) -> dict[str, Any]:
    await _service(state).delete_document(principal, kb_id, doc_id)
    return {"object": "knowledge_base.document.deleted", "id": str(doc_id), "deleted": True}


@router.post("/{kb_id}/search")
async def search(
    kb_id: uuid.UUID, body: SearchIn, principal: CurrentPrincipal, state: State
) -> dict[str, Any]:
    result = await _service(state).search(
        principal, [kb_id], query=body.query, top_k=body.top_k, mode=body.mode
    )
    return {
        "object": "list",
        "data": [HitPublic.of(h) for h in result.hits],
        "knowledge_base_versions": {str(k): v for k, v in result.kb_versions.items()},
    }
