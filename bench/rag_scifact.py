"""Retrieval quality on BEIR SciFact (test split): nDCG@10 and recall@10 for BM25 only,
dense only and hybrid (RRF), with the local multilingual-e5-small.

    nice .venv/bin/python bench/rag_scifact.py [--max-docs N] [--queries N]

Two parts:

1. BM25, whole corpus (5,183 documents, 300 queries): the product's BM25 sparse vectors
   and Qdrant's IDF, one point per document as in BEIR, no embeddings (cheap) -
   comparable to the published BM25 numbers.
2. All three modes through the real service (upload -> ingestion job -> chunk -> embed
   through the gateway -> Qdrant -> search). Embedding the whole corpus with e5-small on
   a shared 2-core CPU takes hours, so ``--max-docs`` takes a corpus *subset*: every
   document judged relevant to the evaluated queries, then seeded-random distractors.
   A subset is easier than the whole corpus (fewer distractors), so part 2 also
   reports BM25 on the same subset: compare modes within one part, not across parts.
   Vectors are cached in bench/.cache, so a larger --max-docs later re-embeds only
   the new documents; with --max-docs 0 (all) part 2 is the full benchmark.

Targets (issue 6): hybrid nDCG@10 >= 0.70 (published: BM25 0.665, all-MiniLM-L6-v2 0.645).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rag_common import (
    CACHE_DIR,
    EVAL_DATA,
    FileCache,
    Stack,
    dedupe,
    load_average,
    ndcg_at,
    read_jsonl,
    read_qrels,
    recall_at,
    table,
    write_result,
)

from polymodal.rag.bm25 import Bm25
from polymodal.rag.edge_index import EdgeIndex
from polymodal.rag.errors import DuplicateDocument
from polymodal.rag.index import ChunkPoint, collection_name
from polymodal.rag.parsers import parse
from polymodal.rag.search import HybridRetriever, SearchConfig

DATA = EVAL_DATA / "scifact"
MODES = ("bm25", "dense", "hybrid")


def doc_text(d: dict[str, Any]) -> str:
    return f"{d['title']}\n\n{d['text']}"


async def bm25_full(
    corpus: list[dict[str, Any]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    tmp: Path,
) -> dict[str, Any]:
    """BM25 over the whole corpus with the product's chunker, sparse vectors and index."""
    index = EdgeIndex(path=tmp / "bm25-qdrant")
    bm25 = Bm25()
    tenant, kb = uuid.uuid4(), uuid.uuid4()
    coll = collection_name("bm25-only", 2)
    started = time.perf_counter()
    by_uuid: dict[str, str] = {}
    points: list[ChunkPoint] = []
    for d in corpus:
        # One point per document, as BEIR's BM25 runs do (the e5 tokenizer the chunker
        # uses is pure Python and would dominate this part; SciFact abstracts mostly
        # fit in one chunk anyway).
        parsed = parse(doc_text(d).encode(), filename=f"{d['_id']}.txt", fmt="txt", max_chars=10**7)
        doc_id = uuid.uuid4()
        by_uuid[str(doc_id)] = d["_id"]
        points.append(ChunkPoint(tenant, kb, doc_id, 0, [1.0, 0.0], bm25.document(parsed.text), {}))
    for i in range(0, len(points), 512):
        await index.upsert(coll, 2, points[i : i + 512])
    indexed_s = time.perf_counter() - started
    ndcg, recall = [], []
    for qid, rel in qrels.items():
        _dense, sparse = await index.search(
            coll,
            tenant_id=tenant,
            kb_ids=[kb],
            dense=None,
            sparse=bm25.query(queries[qid]),
            limit=50,
        )
        ranked = dedupe(by_uuid[str(m.payload["doc_id"])] for m in sparse)
        ndcg.append(ndcg_at(ranked, rel))
        recall.append(recall_at(ranked, rel))
    index.close()
    return {
        "documents": len(corpus),
        "chunks": len(points),
        "queries": len(qrels),
        "ndcg@10": sum(ndcg) / len(ndcg),
        "recall@10": sum(recall) / len(recall),
        "index_s": round(indexed_s, 1),
    }


GRID = [(k, c) for k in (10, 30, 60) for c in (20, 50, 100)]  # (rrf_k, candidates)


async def _hybrid_ndcg(
    retriever: HybridRetriever,
    tenant_id: uuid.UUID,
    kb_id: uuid.UUID,
    by_uuid: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
) -> float:
    ndcg = []
    for qid, rel in qrels.items():
        r = await retriever.search(
            tenant_id=tenant_id, kb_ids=[kb_id], query=queries[qid], top_k=40, mode="hybrid"
        )
        ndcg.append(ndcg_at(dedupe(by_uuid[str(h.doc_id)] for h in r.hits), rel))
    return sum(ndcg) / len(ndcg)


async def tune(
    retriever: HybridRetriever,
    tenant_id: uuid.UUID,
    kb_id: uuid.UUID,
    by_uuid: dict[str, str],
    train: tuple[dict[str, str], dict[str, dict[str, int]]],
    test: tuple[dict[str, str], dict[str, dict[str, int]]],
) -> dict[str, Any]:
    """Fusion settings chosen on the TRAIN queries, then measured once on the test ones."""
    default = retriever._config
    on_train = {}
    for k, c in GRID:
        retriever._config = SearchConfig(candidates=c, rrf_k=k)
        on_train[f"k={k},candidates={c}"] = await _hybrid_ndcg(
            retriever, tenant_id, kb_id, by_uuid, *train
        )
        print("train", k, c, round(on_train[f"k={k},candidates={c}"], 4), flush=True)
    best = max(on_train, key=lambda name: on_train[name])
    k, c = (int(part.split("=")[1]) for part in best.split(","))
    retriever._config = SearchConfig(candidates=c, rrf_k=k)
    test_ndcg = await _hybrid_ndcg(retriever, tenant_id, kb_id, by_uuid, *test)
    retriever._config = default
    return {
        "train_queries": len(train[1]),
        "hybrid_ndcg@10_on_train": on_train,
        "chosen": best,
        "hybrid_ndcg@10_on_test_with_chosen": test_ndcg,
    }


async def service_run(
    corpus: list[dict[str, Any]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    tmp: Path,
    cache: FileCache,
    train: tuple[dict[str, str], dict[str, dict[str, int]]] | None = None,
) -> dict[str, Any]:
    async with Stack(tmp / "svc", cache=cache, ingest_concurrency=1) as stack:
        p = await stack.tenant("scifact")
        kb = await stack.service.create_kb(p, name="scifact")
        by_uuid: dict[str, str] = {}
        duplicates = 0
        cached_before = cache.size()
        started = time.perf_counter()
        for d in corpus:
            try:
                info = await stack.service.add_upload(
                    p,
                    kb.id,
                    filename=f"{d['_id']}.txt",
                    content_type=None,
                    data=doc_text(d).encode(),
                )
            except DuplicateDocument:
                duplicates += 1
                continue
            by_uuid[str(info.id)] = d["_id"]
        await stack.runner.drain()
        ingest_s = time.perf_counter() - started
        docs = await stack.service.list_documents(p, kb.id)
        chunks = sum(x.chunks for x in docs)
        failed = [x.source for x in docs if x.status != "ready"]
        results: dict[str, Any] = {}
        retriever: HybridRetriever = stack.service.retriever
        for mode in MODES:
            ndcg, recall = [], []
            t0 = time.perf_counter()
            for qid, rel in qrels.items():
                r = await retriever.search(
                    tenant_id=p.tenant_id, kb_ids=[kb.id], query=queries[qid], top_k=40, mode=mode
                )
                ranked = dedupe(by_uuid[str(h.doc_id)] for h in r.hits)
                ndcg.append(ndcg_at(ranked, rel))
                recall.append(recall_at(ranked, rel))
            results[mode] = {
                "ndcg@10": sum(ndcg) / len(ndcg),
                "recall@10": sum(recall) / len(recall),
                "search_s": round(time.perf_counter() - t0, 1),
            }
        tuned = None
        if train is not None:
            tuned = await tune(retriever, p.tenant_id, kb.id, by_uuid, train, (queries, qrels))
        return {
            "tuned_on_train": tuned,
            "documents": len(by_uuid),
            "duplicates_refused": duplicates,
            "failed": failed,
            "chunks": chunks,
            "queries": len(qrels),
            "ingest_s": round(ingest_s, 1),
            "embeddings_cached_before": cached_before,
            "embeddings_cached_after": cache.size(),
            "modes": results,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-docs", type=int, default=800, help="corpus subset for part 2; 0 = all")
    ap.add_argument("--queries", type=int, default=0, help="test queries to evaluate; 0 = all")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--skip-bm25-full", action="store_true")
    ap.add_argument("--out", default="rag_scifact")
    ap.add_argument(
        "--tune-on-train",
        action="store_true",
        help="also choose rrf_k and candidates on the train queries, then measure on test",
    )
    args = ap.parse_args()

    corpus = list(read_jsonl(DATA / "corpus.jsonl"))
    queries = {q["_id"]: q["text"] for q in read_jsonl(DATA / "queries.jsonl")}
    qrels = read_qrels(DATA / "qrels" / "test.tsv")
    rng = random.Random(args.seed)
    qids = sorted(qrels, key=int)
    if args.queries:
        qids = sorted(rng.sample(qids, args.queries), key=int)
    qrels = {q: qrels[q] for q in qids}
    relevant = {d for q in qids for d in qrels[q]}
    rest = [d for d in corpus if d["_id"] not in relevant]
    random.Random(args.seed).shuffle(rest)
    ordered = [d for d in corpus if d["_id"] in relevant] + rest
    subset = ordered if args.max_docs == 0 else ordered[: max(args.max_docs, len(relevant))]

    cache = FileCache(CACHE_DIR / "embeddings.sqlite")
    out: dict[str, Any] = {"benchmark": "scifact", "load_average_start": load_average()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_bm25_full:
            out["bm25_full_corpus"] = asyncio.run(
                bm25_full(corpus, queries, read_qrels(DATA / "qrels" / "test.tsv"), tmp)
            )
            print("bm25, whole corpus:", out["bm25_full_corpus"], flush=True)
            write_result(args.out, out)  # a partial run still leaves this part
        train = None
        if args.tune_on_train:
            every = {q["_id"]: q["text"] for q in read_jsonl(DATA / "queries_all.jsonl")}
            train_qrels = read_qrels(DATA / "qrels" / "train.tsv")
            train = (every, train_qrels)
        out["subset"] = asyncio.run(service_run(subset, queries, qrels, tmp, cache, train))
    out["load_average_end"] = load_average()
    out["subset"]["corpus_fraction"] = round(len(subset) / len(corpus), 3)
    rows = []
    if "bm25_full_corpus" in out:
        f = out["bm25_full_corpus"]
        rows.append([f"all {f['documents']} docs", "bm25", f["ndcg@10"], f["recall@10"]])
    s = out["subset"]
    for mode, m in s["modes"].items():
        rows.append([f"subset {s['documents']} docs", mode, m["ndcg@10"], m["recall@10"]])
    print(table(rows, ["corpus", "mode", "nDCG@10", "recall@10"]))
    print(
        f"queries {s['queries']}, chunks {s['chunks']}, ingest {s['ingest_s']} s, "
        f"load {out['load_average_start']} -> {out['load_average_end']}"
    )
    print("written", write_result(args.out, out))


if __name__ == "__main__":
    main()
