"""Build bench/data/paraphrase_pairs.jsonl: labelled query pairs for the semantic query
cache (same question / different question), derived from XQuAD's questions.

    python bench/data/build_paraphrase_pairs.py [--xquad /work/shared/eval-data/xquad-retrieval]

Deterministic (seeded). Provenance of every kind of pair: bench/data/PARAPHRASE_PAIRS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_XQUAD = Path("/work/shared/eval-data/xquad-retrieval")
SEED = 20261127

TRANSLATION_PAIRS = [("en", "de"), ("en", "es"), ("en", "zh"), ("en", "ar"), ("de", "es")]
PER_TRANSLATION = 60
PER_LANG = 50
SURFACE_LANGS = ("en", "de", "es")
PASSAGE_LANGS = ("en", "de", "es", "zh")
NUMBER_LANGS = ("en", "de", "es")
ENTITY_LANGS = ("en", "de", "es")

_AUX_EN = re.compile(
    r"^(.*?\b)(did|does|do|is|was|were|are|can|could|will|would|has|have|had)\b(.*)$"
)
_NUM = re.compile(r"\d+")
_WORD = re.compile(r"\w+")


def load(root: Path, lang: str) -> tuple[dict[str, str], dict[str, str]]:
    queries = {}
    with (root / lang / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            queries[row["_id"]] = row["text"].strip()
    passage = {}
    with (root / lang / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, cid, _ = line.rstrip("\n").split("\t")
            passage[qid] = cid
    return queries, passage


def surface(text: str, rng: random.Random) -> str:
    """A literal repeat as users type it: case, spacing, trailing punctuation."""
    choice = rng.randrange(4)
    if choice == 0:
        return text.lower()
    if choice == 1:
        return text.rstrip("?？ ").rstrip()  # noqa: RUF001
    if choice == 2:
        return "  " + text.replace(" ", "  ", 1) + " "
    return text.rstrip("?") + " ?"


def change_number(text: str, rng: random.Random) -> str | None:
    m = _NUM.search(text)
    if m is None:
        return None
    n = int(m.group())
    new = n + rng.choice([1, 2, 5, 10]) if n > 31 else n + rng.choice([1, 2])
    return text[: m.start()] + str(new) + text[m.end() :]


def negate(text: str, lang: str) -> str | None:
    if {"not", "nicht", "kein", "keine", "never", "nie"} & {w.lower() for w in _WORD.findall(text)}:
        return None  # already negated: adding one more is not a clean minimal edit
    if lang == "en":
        m = _AUX_EN.match(text)
        if m is None:
            return None
        return f"{m.group(1)}{m.group(2)} not{m.group(3)}"
    if lang == "de":
        words = text.rstrip("?").split()
        if len(words) < 3:
            return None
        return " ".join([*words[:-1], "nicht", words[-1]]) + "?"
    return None


def capitalised(text: str) -> list[str]:
    words = _WORD.findall(text)
    return [w for w in words[1:] if w[:1].isupper() and len(w) > 2]


def swap_entity(text: str, others: list[str], rng: random.Random) -> str | None:
    mine = capitalised(text)
    if not mine:
        return None
    target = rng.choice(mine)
    pool = [w for w in others if w not in mine and w.lower() != target.lower()]
    if not pool:
        return None
    return re.sub(rf"\b{re.escape(target)}\b", rng.choice(pool), text, count=1)


def build(root: Path) -> list[dict[str, object]]:
    rng = random.Random(SEED)
    data = {lang: load(root, lang) for lang in {"en", "de", "es", "zh", "ar"}}
    rows: list[dict[str, object]] = []

    def add(kind: str, label: str, la: str, a: str, lb: str, b: str, source: str) -> None:
        rows.append(
            {
                "id": f"{kind}-{len(rows):05d}",
                "kind": kind,
                "label": label,
                "lang_a": la,
                "lang_b": lb,
                "a": a,
                "b": b,
                "source": source,
            }
        )

    # Same question: professional translations (XQuAD), literal repeats, rewrites.
    for la, lb in TRANSLATION_PAIRS:
        common = sorted(set(data[la][0]) & set(data[lb][0]))
        for qid in rng.sample(common, PER_TRANSLATION):
            add("translation", "same", la, data[la][0][qid], lb, data[lb][0][qid], f"xquad:{qid}")
    for lang in SURFACE_LANGS:
        queries = data[lang][0]
        for qid in rng.sample(sorted(queries), PER_LANG):
            add(
                "surface",
                "same",
                lang,
                queries[qid],
                lang,
                surface(queries[qid], rng),
                f"xquad:{qid}",
            )
    en = data["en"][0]
    for line in (HERE / "paraphrase_rewrites.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        qid, rewrite = line.split("\t")
        add("rewrite", "same", "en", en[qid], "en", rewrite, f"xquad:{qid}+hand-written")

    # Different questions: about the same passage (XQuAD), and minimal edits.
    for lang in PASSAGE_LANGS:
        queries, passage = data[lang]
        by_passage: dict[str, list[str]] = defaultdict(list)
        for qid in sorted(queries):
            by_passage[passage[qid]].append(qid)
        candidates = [(a, b) for ids in by_passage.values() for a, b in itertools.pairwise(ids)]
        for a, b in rng.sample(candidates, PER_LANG):
            add("same_passage", "different", lang, queries[a], lang, queries[b], f"xquad:{a},{b}")
    for lang in NUMBER_LANGS:
        queries = data[lang][0]
        with_numbers = [q for q in sorted(queries) if _NUM.search(queries[q])]
        for qid in rng.sample(with_numbers, min(PER_LANG, len(with_numbers))):
            changed = change_number(queries[qid], rng)
            if changed:
                add(
                    "number",
                    "different",
                    lang,
                    queries[qid],
                    lang,
                    changed,
                    f"xquad:{qid}+number-edit",
                )
    for lang, count in (("en", 2 * PER_LANG), ("de", PER_LANG)):
        queries = data[lang][0]
        made = 0
        for qid in rng.sample(sorted(queries), len(queries)):
            negated = negate(queries[qid], lang)
            if negated and negated != queries[qid]:
                add(
                    "negation",
                    "different",
                    lang,
                    queries[qid],
                    lang,
                    negated,
                    f"xquad:{qid}+negation-edit",
                )
                made += 1
                if made == count:
                    break
    for lang in ENTITY_LANGS:
        queries = data[lang][0]
        names = sorted({w for q in queries.values() for w in capitalised(q)})
        made = 0
        for qid in rng.sample(sorted(queries), len(queries)):
            swapped = swap_entity(queries[qid], names, rng)
            if swapped and swapped != queries[qid]:
                add(
                    "entity",
                    "different",
                    lang,
                    queries[qid],
                    lang,
                    swapped,
                    f"xquad:{qid}+entity-edit",
                )
                made += 1
                if made == PER_LANG:
                    break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--xquad", type=Path, default=DEFAULT_XQUAD)
    parser.add_argument("--out", type=Path, default=HERE / "paraphrase_pairs.jsonl")
    args = parser.parse_args()
    rows = build(args.xquad)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[f"{row['label']}/{row['kind']}"] += 1
    print(f"{len(rows)} pairs -> {args.out}")
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")


if __name__ == "__main__":
    main()
