"""Ingestion jobs: the row is the source of truth. A crash mid-way resumes after the last
finished batch; a duplicate delivery is a no-op; a transient failure retries; a bad
document fails alone and leaves nothing indexed; tenants never see each other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from polymodal import wiring
from polymodal.db import knowledge as repo
from polymodal.db.scope import tenant_session
from polymodal.domain.errors import Unavailable
from polymodal.domain.principal import Principal
from polymodal.rag.embedding import Embedder, Kind
from polymodal.rag.index import collection_name
from polymodal.rag.ingest import IngestConfig, Ingestor
from polymodal.rag.jobs import InProcessRunner
from tests.rag.conftest import Rag

LONG = "\n\n".join(
    f"Paragraph {i}. The harbour master logs ship number {i} arriving at dock {i % 9}. " * 3
    for i in range(24)
)


class Scripted(Embedder):
    """The real embedder, with faults on cue: ``crash_after`` batches then a crash
    (CancelledError, as when the process dies), or ``fail_times`` transient errors."""

    def __init__(self, inner: Embedder, *, crash_after: int = -1, fail_times: int = 0) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.fail_times = fail_times
        self.batches: list[int] = []

    async def embed(
        self, *, principal: Principal, feature: str, model: str, texts: Sequence[str], kind: Kind
    ) -> list[list[float]]:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise Unavailable("embedding provider down", provider="test")
        if self.crash_after == len(self.batches):
            raise asyncio.CancelledError  # the worker dies here
        self.batches.append(len(texts))
        return await self.inner.embed(
            principal=principal, feature=feature, model=model, texts=texts, kind=kind
        )


def ingestor(rag: Rag, embedder: Embedder, **config: object) -> Ingestor:
    return Ingestor(
        sessions=rag.sessions,
        models=wiring.gateway_embeddings(rag.gateway),
        embedder=embedder,
        index=rag.stack.index,
        bm25=rag.stack.retriever._bm25,
        config=IngestConfig(batch_size=4, lease_s=30, chunk_tokens=64, **config),  # type: ignore[arg-type]
    )


class Hold:
    """A queue that only records (the test runs jobs itself)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[uuid.UUID, uuid.UUID]] = []

    async def enqueue(self, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
        self.jobs.append((tenant_id, job_id))


async def _job(rag: Rag, tenant_id: uuid.UUID, job_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with tenant_session(rag.sessions, tenant_id) as s:
        return await repo.get_job(s, tenant_id=tenant_id, job_id=job_id)


async def _points(rag: Rag, kb_id: uuid.UUID, tenant_id: uuid.UUID, doc_id: uuid.UUID) -> int:
    coll = collection_name("local-e5-small", 384)
    return await rag.stack.index.count(coll, tenant_id=tenant_id, kb_id=kb_id, doc_id=doc_id)


async def _upload(rag: Rag, p: Principal, kb_id: uuid.UUID, name: str, text: str, hold: Hold):  # type: ignore[no-untyped-def]
    queue, rag.service.queue = rag.service.queue, hold
    try:
        return await rag.service.add_upload(
            p, kb_id, filename=name, content_type=None, data=text.encode()
        )
    finally:
        rag.service.queue = queue


async def test_crash_mid_ingestion_resumes_after_the_last_batch(rag: Rag) -> None:
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="harbour")
    hold = Hold()
    doc = await _upload(rag, p, kb.id, "log.txt", LONG, hold)
    (tenant_id, job_id) = hold.jobs[0]

    crashing = Scripted(rag.stack.embedder, crash_after=2)
    with pytest.raises(asyncio.CancelledError):
        await ingestor(rag, crashing).run(tenant_id, job_id)
    job = await _job(rag, tenant_id, job_id)
    assert job.status == "running" and job.chunks_done == 8 and job.chunks_total > 8
    assert await _points(rag, kb.id, tenant_id, doc.id) == 8

    # A new process starts: its runner takes the orphan over without waiting for the lease.
    resumed = Scripted(rag.stack.embedder)
    runner = InProcessRunner(
        ingestor=ingestor(rag, resumed), sessions=rag.sessions, concurrency=1, lease_s=30
    )
    assert await runner.start() >= 1
    await runner.drain()
    job = await _job(rag, tenant_id, job_id)
    assert job.status == "done" and job.attempts == 2
    assert sum(resumed.batches) == job.chunks_total - 8, "only the rest was embedded"
    assert await _points(rag, kb.id, tenant_id, doc.id) == job.chunks_total
    info = await rag.service.get_document(p, kb.id, doc.id)
    assert info.status == "ready" and info.chunks == job.chunks_total


async def test_duplicate_delivery_is_a_no_op_and_a_fresh_lease_is_respected(rag: Rag) -> None:
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="dupes")
    hold = Hold()
    doc = await _upload(rag, p, kb.id, "a.txt", "One short document about tea.", hold)
    tenant_id, job_id = hold.jobs[0]
    counting = Scripted(rag.stack.embedder)
    ing = ingestor(rag, counting)
    assert await ing.run(tenant_id, job_id) == "done"
    version = (await rag.service.get_kb(p, kb.id)).version
    assert await ing.run(tenant_id, job_id) == "skipped"
    assert len(counting.batches) == 1
    assert (await rag.service.get_kb(p, kb.id)).version == version
    assert await _points(rag, kb.id, tenant_id, doc.id) == 1

    # A job another worker holds (fresh heartbeat) is left to it.
    doc2 = await _upload(rag, p, kb.id, "b.txt", LONG, hold)
    tenant_id, job2 = hold.jobs[1]
    with pytest.raises(asyncio.CancelledError):
        await ingestor(rag, Scripted(rag.stack.embedder, crash_after=1)).run(tenant_id, job2)
    assert await ing.run(tenant_id, job2) == "busy"
    assert await ing.run(tenant_id, job2, takeover=True) == "done"
    assert (await rag.service.get_document(p, kb.id, doc2.id)).status == "ready"


async def test_transient_failure_retries_and_the_last_attempt_fails_cleanly(rag: Rag) -> None:
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="flaky")
    hold = Hold()
    doc = await _upload(rag, p, kb.id, "f.txt", LONG, hold)
    tenant_id, job_id = hold.jobs[0]
    flaky = Scripted(rag.stack.embedder, fail_times=1)
    ing = ingestor(rag, flaky, max_attempts=3)
    assert await ing.run(tenant_id, job_id) == "retry"
    job = await _job(rag, tenant_id, job_id)
    assert job.status == "queued" and "down" in job.error
    assert await ing.run(tenant_id, job_id) == "done"

    # A provider that stays down: after max_attempts the document fails, and what its
    # earlier attempts indexed is removed.
    doc2 = await _upload(rag, p, kb.id, "g.txt", LONG + " extra", hold)
    tenant_id, job2 = hold.jobs[1]
    with pytest.raises(asyncio.CancelledError):
        await ingestor(rag, Scripted(rag.stack.embedder, crash_after=1)).run(tenant_id, job2)
    assert await _points(rag, kb.id, tenant_id, doc2.id) == 4
    down = ingestor(rag, Scripted(rag.stack.embedder, fail_times=99), max_attempts=2)
    assert await down.run(tenant_id, job2, takeover=True) == "failed"
    info = await rag.service.get_document(p, kb.id, doc2.id)
    assert info.status == "failed" and "down" in (info.error or "")
    assert await _points(rag, kb.id, tenant_id, doc2.id) == 0
    assert (await rag.service.get_document(p, kb.id, doc.id)).status == "ready"


async def test_one_bad_document_never_blocks_the_others(rag: Rag) -> None:
    p = await rag.tenant()
    kb = await rag.service.create_kb(p, name="mixed")
    docs = [
        await rag.service.add_upload(
            p, kb.id, filename=f"d{i}.txt", content_type=None, data=f"Doc {i} on owls.".encode()
        )
        for i in range(3)
    ]
    # Break the middle document's stored text behind the service's back.
    async with tenant_session(rag.sessions, p.tenant_id) as s, s.begin():
        text = await repo.get_text(s, tenant_id=p.tenant_id, doc_id=docs[1].id)
        assert text is not None
        text.sections = [{"bogus": True}]
    await rag.runner.drain()
    states = {d.id: d.status for d in await rag.service.list_documents(p, kb.id)}
    assert states[docs[0].id] == "ready" and states[docs[2].id] == "ready"
    assert states[docs[1].id] == "failed"
    broken = await rag.service.get_document(p, kb.id, docs[1].id)
    assert "unreadable" in (broken.error or "")


async def test_identical_vectors_of_two_tenants_never_cross(rag: Rag) -> None:
    text = "The launch code for project Nightingale is 7741."
    a, b = await rag.tenant(), await rag.tenant()
    kb_a = await rag.service.create_kb(a, name="same")
    kb_b = await rag.service.create_kb(b, name="same")
    doc_a = await rag.service.add_upload(
        a, kb_a.id, filename="x.txt", content_type=None, data=text.encode()
    )
    doc_b = await rag.service.add_upload(
        b, kb_b.id, filename="x.txt", content_type=None, data=text.encode()
    )
    await rag.runner.drain()
    for who, kb, doc in ((a, kb_a, doc_a), (b, kb_b, doc_b)):
        for mode in ("hybrid", "dense", "bm25"):
            r = await rag.service.search(who, [kb.id], query="Nightingale launch code", mode=mode)
            assert [(h.kb_id, h.doc_id) for h in r.hits] == [(kb.id, doc.id)]
    # The other tenant's KB id is "not found", through the service and the retriever.
    from polymodal.domain.errors import NotFound

    with pytest.raises(NotFound, match=str(kb_b.id)):
        await rag.service.search(a, [kb_b.id], query="Nightingale")
    # Below the service: the index itself filters by tenant, whatever KB ids it is given.
    coll = collection_name("local-e5-small", 384)
    vec = (
        await rag.stack.index.search(
            coll, tenant_id=b.tenant_id, kb_ids=[kb_b.id], dense=[0.05] * 384, sparse=None, limit=5
        )
    )[0]
    assert vec and all(m.payload["tenant_id"] == str(b.tenant_id) for m in vec)
    crossed = await rag.stack.index.search(
        coll, tenant_id=a.tenant_id, kb_ids=[kb_b.id], dense=[0.05] * 384, sparse=None, limit=5
    )
    assert crossed == ([], [])
    # Deleting A's document leaves B's identical one in place.
    await rag.service.delete_document(a, kb_a.id, doc_a.id)
    assert await _points(rag, kb_a.id, a.tenant_id, doc_a.id) == 0
    assert await _points(rag, kb_b.id, b.tenant_id, doc_b.id) == 1
