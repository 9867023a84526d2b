"""The two index engines answer the same calls the same way: Qdrant Edge (the embedded
profile) and qdrant-client (the server's code path, run here in its local mode)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from polymodal.rag import runtime
from polymodal.rag.bm25 import Bm25
from polymodal.rag.edge_index import EdgeIndex
from polymodal.rag.index import ChunkPoint, QdrantClientIndex, VectorIndex
from polymodal.settings import Settings

COLL = "kb_test_8"
BM25 = Bm25()


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(8)
    return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]


def point(
    tenant: uuid.UUID, kb: uuid.UUID, doc: uuid.UUID, n: int, text: str, seed: int
) -> ChunkPoint:
    return ChunkPoint(tenant, kb, doc, n, unit(seed), BM25.document(text), {"text": text})


@pytest.fixture(params=["edge", "client"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    built: VectorIndex
    if request.param == "edge":
        built = EdgeIndex(path=tmp_path / "edge")
    else:
        built = QdrantClientIndex(url=None, path=tmp_path / "client")
    yield built
    built.close()


async def test_reads_before_any_write_are_empty(index: VectorIndex) -> None:
    t, kb = uuid.uuid4(), uuid.uuid4()
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=None) == 0
    assert await index.chunk_texts(COLL, tenant_id=t, kb_id=kb, doc_id=uuid.uuid4()) == []
    hits = await index.search(
        COLL, tenant_id=t, kb_ids=[kb], dense=unit(1), sparse=BM25.query("ice"), limit=5
    )
    assert hits == ([], [])
    await index.delete(COLL, tenant_id=t, kb_id=kb)  # nothing to delete is not an error


async def test_identical_points_of_two_tenants_never_cross(index: VectorIndex) -> None:
    a, b, kb_a, kb_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    doc_a, doc_b = uuid.uuid4(), uuid.uuid4()
    text = "glacier ice cores hold old air"
    await index.upsert(COLL, 8, [point(a, kb_a, doc_a, 0, text, 7)])
    await index.upsert(COLL, 8, [point(b, kb_b, doc_b, 0, text, 7)])
    for tenant, kb, doc in ((a, kb_a, doc_a), (b, kb_b, doc_b)):
        dense, sparse = await index.search(
            COLL, tenant_id=tenant, kb_ids=[kb], dense=unit(7), sparse=BM25.query(text), limit=10
        )
        assert [m.payload["doc_id"] for m in dense] == [str(doc)]
        assert [m.payload["doc_id"] for m in sparse] == [str(doc)]
        assert dense[0].score == pytest.approx(1.0, abs=1e-4)
    # Another tenant's KB id in the filter finds nothing: the tenant condition holds.
    crossed = await index.search(
        COLL, tenant_id=a, kb_ids=[kb_b], dense=unit(7), sparse=BM25.query(text), limit=10
    )
    assert crossed == ([], [])


async def test_count_delete_and_texts(index: VectorIndex) -> None:
    t, kb, doc, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    words = ["alpha fjord", "beta moraine", "gamma serac", "delta cirque"]
    await index.upsert(COLL, 8, [point(t, kb, doc, i, w, i) for i, w in enumerate(words)])
    await index.upsert(COLL, 8, [point(t, kb, other, 0, "epsilon tarn", 9)])
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=None) == 5
    assert sorted(await index.chunk_texts(COLL, tenant_id=t, kb_id=kb, doc_id=doc)) == sorted(words)
    # A retried batch overwrites (ids are (doc, chunk_no)), never adds.
    await index.upsert(COLL, 8, [point(t, kb, doc, 1, "beta moraine", 1)])
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=doc) == 4
    # A shorter re-upload drops the tail; deleting a document leaves the other one.
    await index.delete(COLL, tenant_id=t, kb_id=kb, doc_id=doc, from_chunk=2)
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=doc) == 2
    await index.delete(COLL, tenant_id=t, kb_id=kb, doc_id=doc)
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=None) == 1
    # Another tenant's delete with this KB id removes nothing.
    await index.delete(COLL, tenant_id=uuid.uuid4(), kb_id=kb)
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=None) == 1
    await index.delete(COLL, tenant_id=t, kb_id=kb)
    assert await index.count(COLL, tenant_id=t, kb_id=kb, doc_id=None) == 0


async def test_search_ranks_by_meaning_and_by_words(index: VectorIndex) -> None:
    t, kb = uuid.uuid4(), uuid.uuid4()
    docs = [uuid.uuid4() for _ in range(4)]
    texts = ["volcano lava basalt", "glacier ice serac", "harbour tariff ledger", "comet orbit"]
    await index.upsert(
        COLL,
        8,
        [
            point(t, kb, d, 0, txt, 100 + i)
            for i, (d, txt) in enumerate(zip(docs, texts, strict=True))
        ],
    )
    dense, sparse = await index.search(
        COLL, tenant_id=t, kb_ids=[kb], dense=unit(102), sparse=BM25.query("glacier ice"), limit=2
    )
    assert dense[0].payload["doc_id"] == str(docs[2])
    assert [m.payload["doc_id"] for m in sparse] == [str(docs[1])]
    assert sparse[0].payload["text"] == "glacier ice serac"


async def test_edge_folder_survives_a_restart(tmp_path: Path) -> None:
    t, kb, doc = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = EdgeIndex(path=tmp_path / "edge")
    await first.upsert(COLL, 8, [point(t, kb, doc, 0, "fjord", 3)])
    first.close()
    again = EdgeIndex(path=tmp_path / "edge")
    try:
        assert await again.count(COLL, tenant_id=t, kb_id=kb, doc_id=doc) == 1
        done = again.optimize()
        assert list(done) == [COLL] and done[COLL][0] == 1
        assert await again.chunk_texts(COLL, tenant_id=t, kb_id=kb, doc_id=doc) == ["fjord"]
    finally:
        again.close()


async def test_edge_bm25_idf_is_the_tenants_own(tmp_path: Path) -> None:
    """Another tenant's documents do not move a tenant's BM25 scores (IDF per tenant)."""
    index = EdgeIndex(path=tmp_path / "edge")
    t, kb, noisy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        await index.upsert(
            COLL,
            8,
            [
                point(t, kb, uuid.uuid4(), 0, "ice sheet", 1),
                point(t, kb, uuid.uuid4(), 0, "rock", 2),
            ],
        )

        async def score() -> float:
            _d, s = await index.search(
                COLL, tenant_id=t, kb_ids=[kb], dense=None, sparse=BM25.query("ice"), limit=1
            )
            return s[0].score

        before = await score()
        await index.upsert(
            COLL, 8, [point(noisy, uuid.uuid4(), uuid.uuid4(), 0, "ice ice", i) for i in range(30)]
        )
        assert await score() == pytest.approx(before)
    finally:
        index.close()


def test_the_embedded_profile_picks_edge_and_refuses_celery_without_a_server(
    tmp_path: Path,
) -> None:
    embedded = Settings(data_dir=tmp_path)
    index = runtime.open_index(embedded)
    assert isinstance(index, EdgeIndex)
    index.close()
    assert isinstance(
        runtime.open_index(embedded.model_copy(update={"qdrant_embedded_engine": "client"})),
        QdrantClientIndex,
    )
    # auto: Redis alone does not move ingestion to Celery (no index workers could share).
    with_redis = embedded.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    assert not runtime.uses_celery(with_redis)
    assert runtime.uses_celery(with_redis.model_copy(update={"qdrant_url": "http://q:6333"}))
    with pytest.raises(RuntimeError, match="ingest_queue=celery needs qdrant_url"):
        runtime.check_queue(with_redis.model_copy(update={"ingest_queue": "celery"}))


async def test_edge_writes_survive_a_killed_process(tmp_path: Path) -> None:
    """Acknowledged writes are in the write-ahead log: a process that dies without closing
    the index (SIGKILL) loses none of them."""
    t, kb, doc = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    folder = str(tmp_path / "edge")
    script = f"""
import asyncio, os, signal, uuid
from pathlib import Path
from polymodal.rag.edge_index import EdgeIndex
from tests.rag.test_index_engines import COLL, point
index = EdgeIndex(path=Path({folder!r}))
t, kb, doc = uuid.UUID({str(t)!r}), uuid.UUID({str(kb)!r}), uuid.UUID({str(doc)!r})
async def main():
    for n in range(40):  # one batch each: most land after the first flush
        await index.upsert(COLL, 8, [point(t, kb, doc, n, f"word{{n}}", n)])
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    assert await proc.wait() == -signal.SIGKILL
    again = EdgeIndex(path=tmp_path / "edge")
    try:
        assert await again.count(COLL, tenant_id=t, kb_id=kb, doc_id=doc) == 40
    finally:
        again.close()
