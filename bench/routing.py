"""How the router splits real prompts into tiers, how well it names their tasks, and what
the routed mix costs against sending everything to the top model.

    .venv/bin/python bench/routing.py [--data bench/data/routing_prompts.jsonl]

Prompts and labels: bench/data/routing_prompts.jsonl (BIG-bench and HumanEval, see
bench/data/ROUTING_PROMPTS.md). Each prompt is classified as `model: "auto"` would be; its
cost is the shipped catalog price of the first deployment of its tier's default route, for
its estimated input and output tokens. "Top model" is the first deployment of the critical
route. Targets (issue 4): routed mix at least 60% cheaper than all-top-model; at least 95%
of prompts labelled hard routed to complex or critical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from polymodal.domain.chat import ChatRequest
from polymodal.gateway.catalog import shipped_specs
from polymodal.gateway.classifier import Classifier
from polymodal.gateway.tokens import count_tokens
from polymodal.settings import RoutesSpec

ROOT = Path(__file__).resolve().parents[1]


def price_of(deployment_id: str) -> tuple[Decimal, Decimal]:
    for spec in shipped_specs():
        if spec.id == deployment_id:
            return spec.price.input_per_mtok, spec.price.output_per_mtok
    raise KeyError(deployment_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT / "bench/data/routing_prompts.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "bench/results/routing.json"))
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line]
    routes = RoutesSpec()
    head = {
        "simple": routes.simple[0],
        "complex": routes.complex[0],
        "critical": routes.critical[0],
    }
    prices = {tier: price_of(d) for tier, d in head.items()}
    top = prices["critical"]
    classifier = Classifier(count_tokens=count_tokens)
    classifier.classify(ChatRequest(model="auto", messages=[{"role": "user", "content": "warm"}]))

    tiers: Counter[str] = Counter()
    task_hits = 0
    hard_up = hard_total = 0
    routed_cost = top_cost = Decimal(0)
    times: list[float] = []
    confusion: Counter[tuple[str, str]] = Counter()
    by_difficulty: dict[str, Counter[str]] = {"easy": Counter(), "hard": Counter()}
    for row in rows:
        request = ChatRequest(model="auto", messages=[{"role": "user", "content": row["prompt"]}])
        started = time.perf_counter()
        decision = classifier.classify(request)
        times.append(time.perf_counter() - started)
        tiers[decision.tier] += 1
        by_difficulty[row["difficulty"]][decision.tier] += 1
        task_hits += decision.task == row["task"]
        confusion[(row["task"], decision.task)] += 1
        if row["difficulty"] == "hard":
            hard_total += 1
            hard_up += decision.tier in ("complex", "critical")
        tin, tout = decision.est_input_tokens, decision.est_output_tokens
        pin, pout = prices[decision.tier]
        routed_cost += (pin * tin + pout * tout) / 1_000_000
        top_cost += (top[0] * tin + top[1] * tout) / 1_000_000

    n = len(rows)
    saving = float(1 - routed_cost / top_cost) if top_cost else 0.0
    times_ms = sorted(t * 1000 for t in times)
    result: dict[str, Any] = {
        "benchmark": "routing",
        "prompts": n,
        "tier_mix": {t: tiers[t] / n for t in ("simple", "complex", "critical")},
        "tier_mix_by_difficulty": {d: dict(c) for d, c in by_difficulty.items()},
        "task_accuracy": task_hits / n,
        "hard_routed_up": hard_up / hard_total if hard_total else None,
        "routed_cost_usd": float(routed_cost),
        "all_top_model_cost_usd": float(top_cost),
        "saving_vs_top_model": saving,
        "route_heads": head,
        "classify_ms": {
            "p50": statistics.median(times_ms),
            "p99": times_ms[min(len(times_ms) - 1, int(0.99 * len(times_ms)))],
        },
        "task_confusion": {f"{a}->{b}": c for (a, b), c in sorted(confusion.items())},
        "machine": machine_info(),
    }
    result["targets_met"] = {
        "saving_ge_60pct": saving >= 0.60,
        "hard_routed_up_ge_95pct": (result["hard_routed_up"] or 0) >= 0.95,
    }
    print(
        f"prompts {n}; tier mix " + ", ".join(f"{t} {v:.1%}" for t, v in result["tier_mix"].items())
    )
    print(f"by difficulty: {result['tier_mix_by_difficulty']}")
    accuracy, hard = result["task_accuracy"], result["hard_routed_up"]
    print(f"task accuracy {accuracy:.1%}; hard routed up {hard:.1%}")
    print(f"cost routed ${routed_cost:.4f} vs all-top ${top_cost:.4f}: {saving:.1%} cheaper")
    ms = result["classify_ms"]
    print(f"classify p50 {ms['p50']:.3f} ms, p99 {ms['p99']:.3f} ms")
    print(f"targets: {result['targets_met']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
