"""Where to put a chatbot's relevance threshold (the dense cosine below which a hit does
not count and the answer is "not in the knowledge base"), measured on XQuAD.

    nice .venv/bin/python bench/rag_relevance.py [--langs en,de,es] [--queries 120]

For each sampled question: the cosine (multilingual-e5-small, ``query:`` / ``passage:``
prefixes, the chatbot's default model) to its gold passage, and the best cosine to any
other passage of the same language (the knowledge base without the answer, where the
honest reply is "not in the knowledge base"). XQuAD's other passages often come from the
same article, so this is the hard case: an off-topic question scores lower still.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from polymodal.providers.local.engines import EmbeddingEngine

DATA = Path("/work/shared/eval-data/xquad-retrieval")
THRESHOLDS = (0.76, 0.78, 0.80, 0.82, 0.84, 0.86)


def run(lang: str, n: int, seed: int, engine: EmbeddingEngine) -> dict[str, Any]:
    rows = [json.loads(x) for x in (DATA / lang / "corpus.jsonl").read_text().splitlines()]
    ids = [r["_id"] for r in rows]
    queries = [json.loads(x) for x in (DATA / lang / "queries.jsonl").read_text().splitlines()]
    gold = dict(
        line.split("\t")[:2]
        for line in (DATA / lang / "qrels" / "test.tsv").read_text().splitlines()[1:]
    )
    sample = random.Random(seed).sample(queries, n)
    passages = np.array(engine.embed([r["text"] for r in rows], kind="passage"))
    asked = np.array(engine.embed([q["text"] for q in sample], kind="query"))
    sims = asked @ passages.T
    at = [ids.index(gold[q["_id"]]) for q in sample]
    answered = np.array([sims[i, j] for i, j in enumerate(at)])
    without = np.array([np.max(np.delete(sims[i], j)) for i, j in enumerate(at)])
    return {
        "queries": n,
        "gold_cosine_median": round(float(np.median(answered)), 4),
        "best_other_cosine_median": round(float(np.median(without)), 4),
        "by_threshold": {
            f"{t:.2f}": {
                "answerable_kept": round(float((answered >= t).mean()), 4),
                "without_answer_still_passing": round(float((without >= t).mean()), 4),
            }
            for t in THRESHOLDS
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default="en,de,es")
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results/rag_relevance.json"
    )
    args = ap.parse_args()
    engine = EmbeddingEngine(threads=1)
    result: dict[str, Any] = {"benchmark": "rag_relevance", "languages": {}}
    for lang in args.langs.split(","):
        r = run(lang, args.queries, args.seed, engine)
        result["languages"][lang] = r
        print(
            f"\n{lang}: gold cosine median {r['gold_cosine_median']}, best other passage "
            f"median {r['best_other_cosine_median']} ({r['queries']} questions)"
        )
        print(f"{'threshold':>9} {'answerable kept':>16} {'no-answer passing':>18}")
        for t, v in r["by_threshold"].items():
            print(
                f"{t:>9} {v['answerable_kept']:>16.1%} {v['without_answer_still_passing']:>18.1%}"
            )
    result["machine"] = machine_info()
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\nwrote", args.out)


if __name__ == "__main__":
    main()
