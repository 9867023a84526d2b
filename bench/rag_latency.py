"""Ingestion throughput and search latency of knowledge bases on this CPU.

    nice .venv/bin/python bench/rag_latency.py [--sizes 10000,100000] [--searches 200]

1. Ingestion throughput (chunks/s) through the real service (upload -> job -> chunk ->
   embed with the local multilingual-e5-small through the gateway -> Qdrant): once cold
   (every chunk embedded) and once warm (embeddings cached: the pipeline without the
   model).
2. Search latency, excluding the query embedding, at 10k and 100k chunks in one tenant
   (plus a second tenant of up to 10k chunks in the same collection, so the tenant
   filter has something to filter): the hybrid query as the retriever sends it (dense + BM25
   candidates in one Qdrant round trip, then reciprocal rank fusion), p50/p95/p99.
   Chunks get synthetic text (for BM25) and random unit vectors: latency does not depend
   on what the vectors mean. Engines: ``edge`` (the embedded profile's default, Qdrant
   Edge in a folder, plain segments as served; ``--optimize`` adds a row after building
   HNSW offline, as `polymodal admin index optimize` does) and ``client``
   (qdrant-client's local mode, brute force in Python, in memory).

Target (issue 6): p95 <= 50 ms at 100k chunks on the embedded profile.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from rag_common import Stack, load_average, table, write_result

from polymodal.rag.bm25 import Bm25
from polymodal.rag.edge_index import EdgeIndex
from polymodal.rag.index import ChunkPoint, QdrantClientIndex, VectorIndex, collection_name
from polymodal.rag.search import SearchConfig, rrf

LIMIT = SearchConfig().candidates  # per arm, as the retriever asks by default

WORDS = [
    "harbour",
    "glacier",
    "survey",
    "ledger",
    "invoice",
    "tariff",
    "protein",
    "enzyme",
    "orbit",
    "comet",
    "violin",
    "sonata",
    "tenant",
    "policy",
    "budget",
    "failover",
    "router",
    "token",
    "cache",
    "vector",
    "index",
    "query",
    "latency",
    "archive",
    "river",
    "delta",
    "basin",
    "summit",
    "forest",
    "canopy",
    "lichen",
    "mineral",
    "quartz",
    "basalt",
    "magma",
    "crater",
    "reactor",
    "turbine",
    "voltage",
    "circuit",
    "sensor",
    "signal",
    "packet",
    "socket",
    "kernel",
    "thread",
    "mutex",
]


def synthetic_text(rng: random.Random, n_words: int = 180) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 400)) for _ in range(n_words))


async def ingest_throughput(tmp: Path, docs: int) -> dict[str, Any]:
    rng = random.Random(7)
    texts = ["\n\n".join(synthetic_text(rng, 120) for _ in range(4)) for _ in range(docs)]
    out: dict[str, Any] = {}
    async with Stack(tmp / "ingest", cache=None) as stack:
        p = await stack.tenant("ingest")
        # The same texts twice in one tenant: the second KB finds every embedding cached.
        for label in ("cold", "warm"):
            kb = await stack.service.create_kb(p, name=f"throughput-{label}")
            started = time.perf_counter()
            for i, text in enumerate(texts):
                await stack.service.add_upload(
                    p, kb.id, filename=f"{i}.txt", content_type=None, data=text.encode()
                )
            await stack.runner.drain()
            elapsed = time.perf_counter() - started
            chunks = sum(d.chunks for d in await stack.service.list_documents(p, kb.id))
            out[label] = {
                "documents": docs,
                "chunks": chunks,
                "seconds": round(elapsed, 2),
                "chunks_per_s": round(chunks / elapsed, 2),
            }
    return out


async def fill(
    index: VectorIndex, coll: str, tenant: uuid.UUID, kb: uuid.UUID, n: int, seed: int
) -> None:
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    bm25 = Bm25()
    batch: list[ChunkPoint] = []
    for i in range(n):
        v = nprng.standard_normal(384).astype(np.float32)
        v /= np.linalg.norm(v)
        text = synthetic_text(rng, 60)
        doc = uuid.UUID(int=seed * 10_000_000 + i // 4)
        batch.append(
            ChunkPoint(tenant, kb, doc, i % 4, v.tolist(), bm25.document(text), {"text": ""})
        )
        if len(batch) == 1000:
            await index.upsert(coll, 384, batch)
            batch = []
    if batch:
        await index.upsert(coll, 384, batch)


async def search_latency(
    tmp: Path, size: int, searches: int, engine: str, optimize: bool
) -> list[dict[str, Any]]:
    index: VectorIndex
    if engine == "edge":  # on disk, as served
        index = EdgeIndex(path=tmp / f"edge-{size}")
    else:  # in memory: the client's local-mode search without its per-point persistence
        index = QdrantClientIndex(url=None, path=None)
    coll = collection_name("bench", 384)
    tenant, other, kb = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    t0 = time.perf_counter()
    await fill(index, coll, tenant, kb, size, seed=1)
    # A second tenant in the same collection, so the tenant filter has work to do.
    await fill(index, coll, other, uuid.uuid4(), min(size, 10_000), seed=2)
    fill_s = time.perf_counter() - t0
    rows = [await _measure(index, coll, tenant, kb, searches)]
    rows[0].update(engine=engine, segments="plain", fill_s=round(fill_s, 1))
    if optimize and isinstance(index, EdgeIndex):
        t0 = time.perf_counter()
        index.optimize()
        rows.append(await _measure(index, coll, tenant, kb, searches))
        rows[1].update(engine=engine, segments="hnsw", optimize_s=round(time.perf_counter() - t0))
    index.close()
    for r in rows:
        r.update(chunks_in_tenant=size, chunks_in_collection=size + min(size, 10_000))
    return rows


async def _measure(
    index: VectorIndex, coll: str, tenant: uuid.UUID, kb: uuid.UUID, searches: int
) -> dict[str, Any]:
    rng = random.Random(3)
    nprng = np.random.default_rng(3)
    bm25 = Bm25()
    timings: list[float] = []
    cpu: list[float] = []  # process CPU time: what the search costs, whatever the load
    for _ in range(searches):
        q = nprng.standard_normal(384).astype(np.float32)
        q /= np.linalg.norm(q)
        sparse = bm25.query(
            " ".join(rng.choice(WORDS) + str(rng.randint(0, 400)) for _ in range(5))
        )
        dense = q.tolist()
        started, cpu0 = time.perf_counter(), time.process_time()
        d, s = await index.search(
            coll, tenant_id=tenant, kb_ids=[kb], dense=dense, sparse=sparse, limit=LIMIT
        )
        fused = rrf([d, s], SearchConfig().rrf_k)[:8]
        timings.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu0) * 1000)
        assert fused and all(m.payload["tenant_id"] == str(tenant) for m in d)
    timings.sort()
    return {
        "searches": searches,
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 2),
        "p99_ms": round(timings[int(0.99 * (len(timings) - 1))], 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "cpu_p95_ms": round(sorted(cpu)[int(0.95 * (len(cpu) - 1))], 2),
    }


async def main_async(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"benchmark": "rag-latency", "load_average_start": load_average()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.ingest_docs:
            result["ingest"] = await ingest_throughput(tmp, args.ingest_docs)
            write_result(args.out, result)
        result["search"] = []
        for size in (int(x) for x in args.sizes.split(",")):
            n = args.searches if size <= 10_000 else args.searches_large
            result["search"] += await search_latency(tmp, size, n, args.engine, args.optimize)
            result["load_average_end"] = load_average()
            write_result(args.out, result)
    if "ingest" in result:
        rows = [
            [k, v["chunks"], v["seconds"], v["chunks_per_s"]] for k, v in result["ingest"].items()
        ]
        print(table(rows, ["ingest (embedding cache)", "chunks", "seconds", "chunks/s"]))
    rows = [
        [
            r["engine"],
            r["segments"],
            r["chunks_in_tenant"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["cpu_p50_ms"],
            r["cpu_p95_ms"],
        ]
        for r in result["search"]
    ]
    head = ["engine", "segments", "chunks in tenant", "p50 ms", "p95 ms", "p99 ms", "CPU p50 ms"]
    print(table(rows, [*head, "CPU p95 ms"]))
    print(f"load {result['load_average_start']} -> {result.get('load_average_end')}")
    print("written", write_result(args.out, result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--searches-large", type=int, default=30, help="searches above 10k chunks")
    ap.add_argument("--ingest-docs", type=int, default=20)
    ap.add_argument("--engine", choices=("edge", "client"), default="edge")
    ap.add_argument("--optimize", action="store_true", help="edge: also measure after HNSW")
    ap.add_argument("--out", default="rag_latency")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
