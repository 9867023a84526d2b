"""Repository of knowledge bases, documents, their text and ingestion jobs.

Every function takes ``tenant_id`` and filters on it (RLS is the second line), except
`pending_jobs`, the one cross-tenant query: the in-process runner's start-up scan for
jobs to resume, which runs before any tenant is known (like db/system.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from polymodal.db.models import utcnow
from polymodal.db.models_rag import IngestJob, KbDocument, KbDocumentText, KnowledgeBase

ACTIVE_JOB = ("queued", "running")


# --- knowledge bases ---------------------------------------------------------------------


async def create_kb(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    description: str,
    embedding_model: str,
    dimensions: int,
    created_by: uuid.UUID | None,
) -> KnowledgeBase:
    kb = KnowledgeBase(
        tenant_id=tenant_id,
        name=name,
        description=description,
        embedding_model=embedding_model,
        dimensions=dimensions,
        version=1,
        created_by=created_by,
    )
    session.add(kb)
    await session.flush()
    return kb


async def kb_by_name(
    session: AsyncSession, *, tenant_id: uuid.UUID, name: str
) -> KnowledgeBase | None:
    q = select(KnowledgeBase).where(
        KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.name == name
    )
    return (await session.execute(q)).scalar_one_or_none()


async def list_kbs(session: AsyncSession, *, tenant_id: uuid.UUID) -> list[KnowledgeBase]:
    q = select(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id)
    return list((await session.execute(q.order_by(KnowledgeBase.created_at))).scalars())


async def get_kbs(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_ids: Sequence[uuid.UUID]
) -> list[KnowledgeBase]:
    q = select(KnowledgeBase).where(
        KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id.in_(list(kb_ids))
    )
    return list((await session.execute(q)).scalars())


async def get_kb(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, lock: bool = False
) -> KnowledgeBase | None:
    q = select(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == kb_id)
    if lock:
        q = q.with_for_update()
    return (await session.execute(q)).scalar_one_or_none()


async def bump_version(session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID) -> None:
    await session.execute(
        update(KnowledgeBase)
        .where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == kb_id)
        .values(version=KnowledgeBase.version + 1, updated_at=utcnow())
    )


async def delete_kb(session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID) -> None:
    docs = select(KbDocument.id).where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
    await session.execute(
        delete(IngestJob).where(IngestJob.tenant_id == tenant_id, IngestJob.kb_id == kb_id)
    )
    await session.execute(
        delete(KbDocumentText).where(
            KbDocumentText.tenant_id == tenant_id, KbDocumentText.doc_id.in_(docs)
        )
    )
    await session.execute(
        delete(KbDocument).where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
    )
    await session.execute(
        delete(KnowledgeBase).where(KnowledgeBase.tenant_id == tenant_id, KnowledgeBase.id == kb_id)
    )


# --- documents -----------------------------------------------------------------------------


async def list_documents(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID
) -> list[KbDocument]:
    q = select(KbDocument).where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
    return list((await session.execute(q.order_by(KbDocument.created_at))).scalars())


async def get_document(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, doc_id: uuid.UUID
) -> KbDocument | None:
    q = select(KbDocument).where(
        KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id, KbDocument.id == doc_id
    )
    return (await session.execute(q)).scalar_one_or_none()


async def document_by_source(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, source: str
) -> KbDocument | None:
    q = select(KbDocument).where(
        KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id, KbDocument.source == source
    )
    return (await session.execute(q)).scalar_one_or_none()


async def document_by_hash(
    session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID, content_hash: str
) -> KbDocument | None:
    q = select(KbDocument).where(
        KbDocument.tenant_id == tenant_id,
        KbDocument.kb_id == kb_id,
        KbDocument.content_hash == content_hash,
    )
    return (await session.execute(q.limit(1))).scalar_one_or_none()


async def count_documents(session: AsyncSession, *, tenant_id: uuid.UUID, kb_id: uuid.UUID) -> int:
    q = select(func.count()).where(KbDocument.tenant_id == tenant_id, KbDocument.kb_id == kb_id)
    return int((await session.execute(q)).scalar_one())


async def delete_document(
    session: AsyncSession, *, tenant_id: uuid.UUID, doc_id: uuid.UUID
) -> None:
    await session.execute(
        delete(IngestJob).where(IngestJob.tenant_id == tenant_id, IngestJob.doc_id == doc_id)
    )
    await session.execute(
        delete(KbDocumentText).where(
            KbDocumentText.tenant_id == tenant_id, KbDocumentText.doc_id == doc_id
        )
    )
    await session.execute(
        delete(KbDocument).where(KbDocument.tenant_id == tenant_id, KbDocument.id == doc_id)
    )


async def put_text(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    doc_id: uuid.UUID,
    content_hash: str,
    sections: list[dict[str, Any]],
) -> None:
    row = await session.get(KbDocumentText, doc_id)
    if row is not None and row.tenant_id == tenant_id:
        row.content_hash = content_hash
        row.sections = sections
    else:
        session.add(
            KbDocumentText(
                doc_id=doc_id, tenant_id=tenant_id, content_hash=content_hash, sections=sections
            )
        )
    await session.flush()


async def get_text(
    session: AsyncSession, *, tenant_id: uuid.UUID, doc_id: uuid.UUID
) -> KbDocumentText | None:
    q = select(KbDocumentText).where(
        KbDocumentText.tenant_id == tenant_id, KbDocumentText.doc_id == doc_id
    )
    return (await session.execute(q)).scalar_one_or_none()


# --- ingestion jobs -----------------------------------------------------------------------


async def create_job(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    kb_id: uuid.UUID,
    doc_id: uuid.UUID,
    content_hash: str,
    created_by: uuid.UUID | None,
) -> IngestJob:
    # A newer version of the document makes older unfinished jobs moot.
    await session.execute(
        update(IngestJob)
        .where(
            IngestJob.tenant_id == tenant_id,
            IngestJob.doc_id == doc_id,
            IngestJob.status.in_(ACTIVE_JOB),
        )
        .values(status="superseded", finished_at=utcnow())
    )
    job = IngestJob(
        tenant_id=tenant_id,
        kb_id=kb_id,
        doc_id=doc_id,
        content_hash=content_hash,
        status="queued",
        attempts=0,
        chunks_total=0,
        chunks_done=0,
        created_by=created_by,
    )
    session.add(job)
    await session.flush()
    return job


async def get_job(
    session: AsyncSession, *, tenant_id: uuid.UUID, job_id: uuid.UUID, lock: bool = False
) -> IngestJob | None:
    q = select(IngestJob).where(IngestJob.tenant_id == tenant_id, IngestJob.id == job_id)
    if lock:
        q = q.with_for_update()
    return (await session.execute(q)).scalar_one_or_none()


async def latest_jobs(
    session: AsyncSession, *, tenant_id: uuid.UUID, doc_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, IngestJob]:
    q = (
        select(IngestJob)
        .where(IngestJob.tenant_id == tenant_id, IngestJob.doc_id.in_(list(doc_ids)))
        .order_by(IngestJob.created_at)
    )
    return {j.doc_id: j for j in (await session.execute(q)).scalars()}


def stale_before(now: datetime, lease_s: float) -> datetime:
    return now - timedelta(seconds=lease_s)


async def pending_jobs(
    session: AsyncSession, *, lease_s: float, now: datetime | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant_id, job_id) of every job to (re)start: queued, or running with a stale
    heartbeat (its worker died). Cross-tenant: the runner's start-up scan only."""
    cutoff = stale_before(now or utcnow(), lease_s)
    q = select(IngestJob.tenant_id, IngestJob.id).where(
        or_(
            IngestJob.status == "queued",
            (IngestJob.status == "running")
            & or_(IngestJob.heartbeat_at.is_(None), IngestJob.heartbeat_at < cutoff),
        )
    )
    return [(t, j) for t, j in (await session.execute(q.order_by(IngestJob.created_at))).all()]
