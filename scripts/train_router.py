"""Train the classifier's learned scorer (src/polymodal/gateway/learned.py) on the labelled
routing prompts, grade it honestly, and write the model files into the package.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_router.py  # evaluate, fit, write
    .venv/bin/python scripts/train_router.py --dry-run            # evaluate only

Needs the dev extra (scikit-learn). Steps:

1. Featurise every prompt exactly as `Classifier` does at run time (`learned.features` over
   the text and `classifier.rule_features`), into a scipy CSR matrix.
2. Grade with grouped cross-validation: the sources are split into `FOLDS` groups and
   every prompt is scored by heads (task and difficulty) fitted on the other groups only,
   so no model is graded on a BIG-bench task whose prompts it has seen (their style gives
   the source away; see bench/data/ROUTING_PROMPTS.md, "Known limits").
3. On those out-of-fold scores, combined with the rules exactly as the classifier combines
   them (`combine`: the rules' task stands where they found cues), pick the P(hard)
   threshold (the highest one whose hard recall is at least `TARGET_HARD_RECALL`) and the
   task-confidence floor (the one with the best task accuracy).
4. Fit both heads on all prompts and write `router_model.npz` and `router_model.json`,
   and the out-of-fold decisions to bench/data/routing_oof.json for bench/routing.py.

Deterministic: lbfgs has no randomness and GroupKFold (unshuffled) assigns sources to
folds by size; the shipped files were written with OMP_NUM_THREADS=1 (more BLAS threads
sum in another order and move a few float16 weights by one step, ~1e-5). The
regularisation strengths below were chosen on this same cross-validation (C in 0.03-100),
so the out-of-fold numbers are slightly optimistic. Takes about three minutes on two cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from polymodal.domain.chat import ChatRequest
from polymodal.gateway import learned
from polymodal.gateway.classifier import (
    TASKS,
    Classifier,
    cue_window,
    rule_feature_names,
    rule_features,
    text_signals,
)
from polymodal.gateway.classifier import rules_task as classifier_rules_task
from polymodal.gateway.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench/data/routing_prompts.jsonl"
OOF = ROOT / "bench/data/routing_oof.json"
TARGET_HARD_RECALL = 0.95
FOLDS = 10
C_TASK = 10.0  # inverse L2 strength of the task head
C_HARD = 10.0  # inverse L2 strength of the difficulty head
BUCKET_BITS = 16
WINDOW = 500  # characters kept at each end of a long message (cost grows with it)
TASK_FLOORS = tuple(round(0.05 * i, 2) for i in range(20))

Matrix = sparse.csr_matrix
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Dataset:
    rows: list[dict[str, Any]]
    x: Matrix
    task: npt.NDArray[np.int64]
    hard: npt.NDArray[np.int64]
    groups: npt.NDArray[np.str_]
    rules_task: list[str]
    rules_task_hits: list[int]
    rules_tier: list[str]


def feature_config() -> learned.FeatureConfig:
    return learned.FeatureConfig(
        bucket_bits=BUCKET_BITS, window=WINDOW, rule_features=rule_feature_names()
    )


def load(path: Path, config: learned.FeatureConfig) -> Dataset:
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    rules_only = Classifier(count_tokens=count_tokens, model_path=None)
    indptr, indices, values = [0], [], []
    rules_task, rules_task_hits, rules_tier = [], [], []
    for row in rows:
        text = row["prompt"]
        last = cue_window(text)
        signals = text_signals(last)
        idx, val = learned.features(text, rule_features(len(text), last, signals), config)
        rules_task_hits.append(classifier_rules_task(signals)[1])
        indices.append(idx)
        values.append(val)
        indptr.append(indptr[-1] + len(idx))
        decision = rules_only.classify(
            ChatRequest(model="auto", messages=[{"role": "user", "content": text}])
        )
        rules_task.append(decision.task)
        rules_tier.append(decision.tier)
    x = sparse.csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.array(indptr)),
        shape=(len(rows), config.n_features),
        dtype=np.float64,
    )
    x.sum_duplicates()
    x.eliminate_zeros()
    return Dataset(
        rows=rows,
        x=x,
        task=np.array([TASKS.index(r["task"]) for r in rows]),
        hard=np.array([int(r["difficulty"] == "hard") for r in rows]),
        groups=np.array([r["source"] for r in rows]),
        rules_task=rules_task,
        rules_task_hits=rules_task_hits,
        rules_tier=rules_tier,
    )


def fit(x: Matrix, task: npt.NDArray[np.int64], hard: npt.NDArray[np.int64]) -> tuple[Any, Any]:
    task_head = LogisticRegression(C=C_TASK, max_iter=5000, tol=1e-6)
    hard_head = LogisticRegression(C=C_HARD, max_iter=5000, tol=1e-6)
    return task_head.fit(x, task), hard_head.fit(x, hard)


def task_probabilities(head: Any, x: Matrix) -> Floats:
    """Probabilities over all of TASKS, whatever classes the head saw in training."""
    out = np.zeros((x.shape[0], len(TASKS)))
    out[:, head.classes_] = head.predict_proba(x)
    return out


def out_of_fold(data: Dataset) -> tuple[Floats, Floats]:
    """(task probabilities, P(hard)) of each prompt from heads fitted without its source."""
    p_task = np.zeros((len(data.rows), len(TASKS)))
    p_hard = np.zeros(len(data.rows))
    folds = GroupKFold(n_splits=FOLDS).split(data.x, groups=data.groups)
    for train, test in folds:
        if set(data.groups[train]) & set(data.groups[test]):
            raise AssertionError("a source is on both sides of a fold")
        task_head, hard_head = fit(data.x[train], data.task[train], data.hard[train])
        p_task[test] = task_probabilities(task_head, data.x[test])
        p_hard[test] = hard_head.predict_proba(data.x[test])[:, 1]
    return p_task, p_hard


def combine(
    data: Dataset, p_task: Floats, p_hard: Floats, *, threshold: float, task_floor: float
) -> tuple[list[str], list[str]]:
    """Tasks and tiers as `Classifier` decides them from these scores and the rules (its
    length floor, `min_chars`, is the shortest prompt here, so it never applies)."""
    tasks, tiers = [], []
    for i in range(len(data.rows)):
        best = int(p_task[i].argmax())
        if data.rules_task_hits[i] or p_task[i, best] < task_floor:
            tasks.append(data.rules_task[i])
        else:
            tasks.append(TASKS[best])
        rules = data.rules_tier[i]
        if rules == "critical":
            tiers.append("critical")
        elif p_hard[i] >= threshold or rules == "complex":
            tiers.append("complex")
        else:
            tiers.append("simple")
    return tasks, tiers


def pick_threshold(data: Dataset, p_hard: Floats) -> float:
    """The highest P(hard) threshold at which the classifier (rules included) sends at least
    TARGET_HARD_RECALL of the hard prompts up."""
    hard = data.hard == 1
    rules_up = np.array([t != "simple" for t in data.rules_tier])
    for threshold in sorted(set(np.round(p_hard, 4)), reverse=True):
        up = (p_hard >= threshold) | rules_up
        if up[hard].mean() >= TARGET_HARD_RECALL:
            return float(threshold)
    return 0.0


def pick_task_floor(data: Dataset, p_task: Floats) -> float:
    def accuracy(floor: float) -> float:
        tasks, _ = combine(data, p_task, np.zeros(len(data.rows)), threshold=1, task_floor=floor)
        return float(np.mean([t == r["task"] for t, r in zip(tasks, data.rows, strict=True)]))

    return max(TASK_FLOORS, key=lambda f: (accuracy(f), -f))


def metrics(
    data: Dataset, tasks: list[str], tiers: list[str], p_task: Floats, p_hard: Floats
) -> dict[str, Any]:
    hard = data.hard == 1
    up = np.array([t != "simple" for t in tiers])
    labels = [r["task"] for r in data.rows]
    learned_tasks = [TASKS[i] for i in p_task.argmax(axis=1)]
    by_difficulty = {
        d: dict(Counter(t for t, h in zip(tiers, data.hard, strict=True) if h == (d == "hard")))
        for d in ("easy", "hard")
    }
    return {
        "prompts": len(data.rows),
        "task_accuracy": float(np.mean([a == b for a, b in zip(tasks, labels, strict=True)])),
        "task_accuracy_learned_alone": float(
            np.mean([a == b for a, b in zip(learned_tasks, labels, strict=True)])
        ),
        "hard_routed_up": float(up[hard].mean()),
        "easy_to_simple": float((~up[~hard]).mean()),
        "p_hard_auc": float(roc_auc_score(data.hard, p_hard)),
        "tier_mix_by_difficulty": by_difficulty,
    }


def per_source(data: Dataset, tiers: list[str], tasks: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(set(data.groups)):
        rows = [i for i, g in enumerate(data.groups) if g == source]
        out[source] = {
            "n": len(rows),
            "task": data.rows[rows[0]]["task"],
            "task_accuracy": round(
                float(np.mean([tasks[i] == data.rows[i]["task"] for i in rows])), 3
            ),
            "up_by_difficulty": {
                d: round(float(np.mean([tiers[i] != "simple" for i in ix])), 3)
                for d in ("easy", "hard")
                if (ix := [i for i in rows if data.rows[i]["difficulty"] == d])
            },
        }
    return out


def evaluate(data: Dataset) -> dict[str, Any]:
    """The grouped cross-validation: chosen threshold and floor, and what they give."""
    started = time.perf_counter()
    p_task, p_hard = out_of_fold(data)
    threshold = pick_threshold(data, p_hard)
    floor = pick_task_floor(data, p_task)
    tasks, tiers = combine(data, p_task, p_hard, threshold=threshold, task_floor=floor)
    return {
        "scheme": "GroupKFold by source",
        "folds": FOLDS,
        "hard_threshold": threshold,
        "task_min_probability": floor,
        "seconds": round(time.perf_counter() - started, 1),
        **metrics(data, tasks, tiers, p_task, p_hard),
        "per_source": per_source(data, tiers, tasks),
        "p_hard": [round(float(p), 5) for p in p_hard],
        "tasks": tasks,
        "tiers": tiers,
    }


def scorer_from(task_head: Any, hard_head: Any, config: learned.FeatureConfig, **kw: Any) -> Any:
    weights = np.zeros((config.n_features, len(TASKS) + 1), dtype=np.float32)
    bias = np.zeros(len(TASKS) + 1, dtype=np.float32)
    weights[:, : len(TASKS)] = task_head.coef_.T
    bias[: len(TASKS)] = task_head.intercept_
    weights[:, -1] = hard_head.coef_[0]
    bias[-1] = hard_head.intercept_[0]
    return learned.LearnedScorer(weights=weights, bias=bias, tasks=TASKS, config=config, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--dry-run", action="store_true", help="evaluate, write nothing")
    args = parser.parse_args()
    config = feature_config()
    data = load(args.data, config)
    print(f"{len(data.rows)} prompts, {len(set(data.groups))} sources, {data.x.nnz} non-zeros")

    oof = evaluate(data)
    print(
        f"out-of-fold ({oof['scheme']}, {oof['folds']} folds, {oof['seconds']} s): "
        f"task accuracy {oof['task_accuracy']:.1%} (learned alone "
        f"{oof['task_accuracy_learned_alone']:.1%}); P(hard) threshold "
        f"{oof['hard_threshold']:.3f} -> hard routed up {oof['hard_routed_up']:.1%}, "
        f"easy to simple {oof['easy_to_simple']:.1%}; P(hard) AUC {oof['p_hard_auc']:.3f}; "
        f"task floor {oof['task_min_probability']}"
    )
    if args.dry_run:
        return

    task_head, hard_head = fit(data.x, data.task, data.hard)
    scorer = scorer_from(
        task_head,
        hard_head,
        config,
        hard_threshold=oof["hard_threshold"],
        task_min_probability=oof["task_min_probability"],
        min_chars=min(len(r["prompt"]) for r in data.rows),
    )
    npz, meta_path = learned.packaged_model_paths()
    sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    trained = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    summary = {k: v for k, v in oof.items() if k not in ("p_hard", "tasks", "tiers", "per_source")}
    meta = {
        "model": "two logistic-regression heads (scikit-learn, lbfgs, L2) over hashed features",
        "trained": trained,
        "trainer": "scripts/train_router.py",
        "python": sys.version.split()[0],
        "hyperparameters": {"C_task": C_TASK, "C_hard": C_HARD},
        "data": {
            "path": str(args.data.resolve().relative_to(ROOT)),
            "sha256": sha,
            "prompts": len(data.rows),
            "sources": len(set(data.groups)),
            "labels": dict(Counter(f"{r['task']}/{r['difficulty']}" for r in data.rows)),
            "provenance": "bench/data/ROUTING_PROMPTS.md (BIG-bench, HumanEval)",
            "licences": dict(Counter(r["licence"] for r in data.rows)),
        },
        "out_of_fold": summary,
        "in_sample_note": "bench/routing.py reports the shipped model on the same prompts",
    }
    scorer.save(npz, meta_path, meta)
    OOF.write_text(
        json.dumps({"data_sha256": sha, "model_trained": trained, **oof}, ensure_ascii=False)
        + "\n",
        "utf-8",
    )
    print(f"wrote {npz} ({npz.stat().st_size / 1e6:.2f} MB), {meta_path.name}, {OOF.name}")


if __name__ == "__main__":
    main()
