"""Replay of repeated and paraphrased questions through the semantic query cache: hit
rate, latency with and without the cache, time saved, and harmful hits.

    nice .venv/bin/python bench/rag_cache.py [--events 300] [--seed 5] [--no-redis]

The real stack (bench/rag_common.py: SQLite, Qdrant local mode, the gateway with the
local multilingual-e5-small) holds one knowledge base of XQuAD's 240 English passages.
A seeded stream of questions is replayed, each event one of:

- ``new``: an XQuAD question not asked before;
- ``repeat``: an earlier question again, verbatim (popular ones more often);
- ``surface``: an earlier question lower-cased or without its question mark;
- ``paraphrase``: the hand-written rewrite of an earlier question
  (bench/data/paraphrase_rewrites.tsv; see PARAPHRASE_PAIRS.md);
- ``near_miss``: an earlier question with one number changed or a negation added (must
  NOT be served from the cache).

Every event is answered twice, each by its own retriever with its own embedding cache as
in production: ``baseline`` is hybrid search alone; ``cached`` goes through
`CachedSearch` (the query embedded through the knowledge bases' cached embedder, which
the app shares with the semantic cache; looked up; searched and stored on a miss). Two
checks of every hit: "served by another question" (the cached query that served it asks
a different question: another XQuAD question, or for a near-miss anything but the same
edited text) and "top hit differs" (its top hit is not the baseline's). The semantic
cache runs on the in-process store and, when Redis is reachable, on Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rag_common import (
    CACHE_DIR,
    EVAL_DATA,
    FileCache,
    Stack,
    load_average,
    read_jsonl,
    table,
    write_result,
)

from polymodal import wiring
from polymodal.cache.memory import MemoryCache
from polymodal.domain.principal import Principal
from polymodal.rag import runtime
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.chatbot_reply import SharedQueryEmbedder
from polymodal.rag.errors import DuplicateDocument
from polymodal.rag.semantic_cache import (
    MemoryVectorStore,
    RedisVectorStore,
    SemanticCache,
    VectorStore,
)

DATA = EVAL_DATA / "xquad-retrieval" / "en"
REWRITES = Path(__file__).resolve().parent / "data" / "paraphrase_rewrites.tsv"
MIX = {"new": 0.35, "repeat": 0.30, "surface": 0.12, "paraphrase": 0.13, "near_miss": 0.10}
TOP_K = 5
_NUM = re.compile(r"\d+")
_AUX = re.compile(r"^(.*?\b)(did|does|do|is|was|were|are|can|could|has|have|had)\b(.*)$")


def near_miss(text: str, rng: random.Random) -> str | None:
    m = _NUM.search(text)
    if m is not None:
        return text[: m.start()] + str(int(m.group()) + rng.choice([1, 2, 10])) + text[m.end() :]
    a = _AUX.match(text)
    return f"{a.group(1)}{a.group(2)} not{a.group(3)}" if a else None


def workload(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, base question id, text) events."""
    rng = random.Random(seed)
    questions = {q["_id"]: q["text"] for q in read_jsonl(DATA / "queries.jsonl")}
    rewrites = dict(
        line.split("\t")
        for line in REWRITES.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    fresh = [q for q in rewrites if q in questions]  # questions with a rewrite come first
    rest = sorted(set(questions) - set(fresh))
    rng.shuffle(fresh)
    rng.shuffle(rest)
    pool = fresh + rest
    asked: list[str] = []
    events: list[tuple[str, str, str]] = []
    kinds, weights = zip(*MIX.items(), strict=True)
    while len(events) < n:
        kind = rng.choices(kinds, weights)[0] if asked else "new"
        if kind == "new":
            qid = pool.pop(0)
            asked.append(qid)
            events.append(("new", qid, questions[qid]))
            continue
        # Popularity: earlier questions are asked again more often (Zipf-like).
        qid = asked[min(int(rng.paretovariate(1.2)) - 1, len(asked) - 1)]
        text = questions[qid]
        if kind == "surface":
            text = text.lower() if rng.random() < 0.5 else text.rstrip("?").rstrip()
        elif kind == "paraphrase":
            if qid not in rewrites:
                continue
            text = rewrites[qid]
        elif kind == "near_miss":
            edited = near_miss(text, rng)
            if edited is None:
                continue
            text = edited
        events.append((kind, qid, text))
    return events


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0


async def replay(
    stack: Stack,
    store: VectorStore,
    events: list[tuple[str, str, str]],
    kb: uuid.UUID,
    principal: Principal,
    threshold: float,
) -> dict[str, Any]:
    # Two retrievers over the same index, each with its own (empty) embedding cache; the
    # cached side shares its embedding cache with the semantic cache, as the app does.
    def build() -> Any:
        return runtime.build(
            stack.settings,
            sessions=stack.sessions,
            models=wiring.gateway_embeddings(stack.gateway),
            cache=MemoryCache(max_entries=50_000),
            index=stack.rag.index,
        )

    baseline, behind = build().retriever, build()
    search = CachedSearch(
        retriever=behind.retriever, cache=SemanticCache(store, threshold=threshold)
    )
    embedder = SharedQueryEmbedder(behind.embedder, principal, "local-e5-small")
    versions = {
        kb: (
            await stack.service.retriever.search(
                tenant_id=principal.tenant_id, kb_ids=[kb], query="warm up", top_k=1
            )
        ).kb_versions[kb]
    }
    for warm in (baseline, behind.retriever):  # first-call costs are not the cache's
        await warm.search(
            tenant_id=principal.tenant_id, kb_ids=[kb], query="warm-up question", top_k=TOP_K
        )
    rows: list[dict[str, Any]] = []
    # Which question each text asks: an edited near-miss is a question of its own.
    source: dict[str | None, str] = {}
    for kind, qid, text in events:
        key = f"{qid}:{text}" if kind == "near_miss" else qid
        source.setdefault(text, key)

        async def plain(text: str = text) -> tuple[Any, float]:
            t = time.perf_counter()
            r = await baseline.search(
                tenant_id=principal.tenant_id, kb_ids=[kb], query=text, top_k=TOP_K
            )
            return r, time.perf_counter() - t

        async def cached(text: str = text) -> tuple[Any, float]:
            t = time.perf_counter()
            r = await search.search(
                tenant_id=principal.tenant_id,
                kb_ids=[kb],
                query=text,
                top_k=TOP_K,
                feature="chatbot:bench",
                embedder=embedder,
                kb_versions=versions,
            )
            return r, time.perf_counter() - t

        # Alternate which side goes first, so neither gains from running second.
        if len(rows) % 2 == 0:
            (base, base_s), (outcome, cached_s) = await plain(), await cached()
        else:
            (outcome, cached_s), (base, base_s) = await cached(), await plain()
        top_base = base.hits[0].doc_id if base.hits else None
        top_cached = outcome.retrieval.hits[0].doc_id if outcome.retrieval.hits else None
        rows.append({
            "kind": kind, "qid": qid, "cache": outcome.cache, "baseline_s": base_s,
            "cached_s": cached_s, "lookup_s": outcome.lookup_s,
            "harmful": outcome.cache == "hit" and top_base != top_cached,
            "wrong_source": outcome.cache == "hit" and source.get(outcome.matched_query) != key,
            "text": text, "matched": outcome.matched_query,
        })  # fmt: skip
    return summarise(rows)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in MIX:
        sub = [r for r in rows if r["kind"] == kind]
        if sub:
            by_kind[kind] = {
                "events": len(sub),
                "hit_rate": sum(r["cache"] == "hit" for r in sub) / len(sub),
                "guarded": sum(r["cache"] == "guarded" for r in sub),
                "harmful_hits": sum(r["harmful"] for r in sub),
                "wrong_source_hits": sum(r["wrong_source"] for r in sub),
            }
    hits = [r for r in rows if r["cache"] == "hit"]
    misses = [r for r in rows if r["cache"] != "hit"]
    base = [r["baseline_s"] for r in rows]
    cached = [r["cached_s"] for r in rows]
    return {
        "events": len(rows),
        "hit_rate": len(hits) / len(rows),
        "harmful_hits": sum(r["harmful"] for r in rows),
        "wrong_source_hits": sum(r["wrong_source"] for r in rows),
        "wrong_source_examples": [
            {"kind": r["kind"], "query": r["text"], "served_by": r["matched"]}
            for r in rows
            if r["wrong_source"]
        ],
        "by_kind": by_kind,
        "latency_ms": {
            "baseline_mean": 1000 * statistics.fmean(base),
            "cached_mean": 1000 * statistics.fmean(cached),
            "baseline_p50": 1000 * pct(base, 0.5),
            "cached_p50": 1000 * pct(cached, 0.5),
            "baseline_p95": 1000 * pct(base, 0.95),
            "cached_p95": 1000 * pct(cached, 0.95),
            "hit_mean": 1000 * statistics.fmean(r["cached_s"] for r in hits) if hits else None,
            "hit_baseline_mean": (
                1000 * statistics.fmean(r["baseline_s"] for r in hits) if hits else None
            ),
            "miss_overhead_mean": (
                1000 * statistics.fmean(r["cached_s"] - r["baseline_s"] for r in misses)
                if misses
                else None
            ),
        },
        "time_saved_s": sum(base) - sum(cached),
        "time_saved_share": (sum(base) - sum(cached)) / sum(base),
    }


async def main_async(args: argparse.Namespace) -> None:
    events = workload(args.events, args.seed)
    result: dict[str, Any] = {
        "benchmark": "rag_cache",
        "events": len(events),
        "mix": MIX,
        "threshold": args.threshold,
        "top_k": TOP_K,
        "load_average_start": load_average(),
        "stores": {},
    }
    cache = FileCache(CACHE_DIR / "embeddings.sqlite")  # passages only: ingest once
    with tempfile.TemporaryDirectory() as tmp:
        async with Stack(Path(tmp), cache=cache) as stack:
            principal = await stack.tenant("cache-replay")
            kb = await stack.service.create_kb(principal, name="xquad-en")
            for d in read_jsonl(DATA / "corpus.jsonl"):
                with contextlib.suppress(DuplicateDocument):
                    await stack.service.add_upload(
                        principal,
                        kb.id,
                        filename=f"{d['_id'][:16]}.txt",
                        content_type=None,
                        data=d["text"].encode(),
                    )
            await stack.runner.drain()
            stores: dict[str, VectorStore] = {
                "in-process": MemoryVectorStore(max_entries=2000, ttl_s=3600)
            }
            client = None
            if not args.no_redis:
                client = aioredis.Redis.from_url(args.redis)
                try:
                    await client.ping()
                    prefix = f"bench-rag-cache:{os.getpid()}:"
                    stores["redis"] = RedisVectorStore(
                        client, prefix=prefix, max_entries=2000, ttl_s=3600
                    )
                except Exception as e:
                    print(f"redis not reachable ({e!r}): in-process store only")
            for name, store in stores.items():
                print(f"replaying {len(events)} events on the {name} store ...")
                result["stores"][name] = await replay(
                    stack, store, events, kb.id, principal, args.threshold
                )
                await store.clear_tenant(principal.tenant_id)
            if client is not None:
                await client.aclose()
    result["load_average_end"] = load_average()
    for name, r in result["stores"].items():
        lat = r["latency_ms"]
        print(
            f"\n{name} store: hit rate {r['hit_rate']:.1%}, "
            f"served by another question {r['wrong_source_hits']}, "
            f"time saved {r['time_saved_s']:.1f} s ({r['time_saved_share']:.1%} of search time)"
        )
        rows = [
            [k, v["events"], v["hit_rate"], v["guarded"], v["wrong_source_hits"], v["harmful_hits"]]
            for k, v in r["by_kind"].items()
        ]
        header = ["kind", "events", "hit rate", "guarded", "served by another question",
                  "top hit differs"]  # fmt: skip
        print(table(rows, header))
        for ex in r["wrong_source_examples"]:
            print(f"  wrong source [{ex['kind']}]: {ex['query']!r} <- {ex['served_by']!r}")
        print(
            table(
                [
                    [
                        "baseline (search only)",
                        lat["baseline_mean"],
                        lat["baseline_p50"],
                        lat["baseline_p95"],
                    ],
                    [
                        "with semantic cache",
                        lat["cached_mean"],
                        lat["cached_p50"],
                        lat["cached_p95"],
                    ],
                ],
                ["ms", "mean", "p50", "p95"],
            )
        )
        print(
            f"hits: {lat['hit_mean']:.1f} ms vs {lat['hit_baseline_mean']:.1f} ms searched; "
            f"misses pay {lat['miss_overhead_mean']:.1f} ms extra (query embedding + lookup)"
        )
    print("written", write_result("rag_cache", result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.92)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--no-redis", action="store_true")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
