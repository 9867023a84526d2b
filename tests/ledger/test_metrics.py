"""Usage metrics keep bounded label sets whatever feature tags, deployments and plans the
ledger sees: ids after ':' never become label values."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from polymodal.domain.usage import FEATURE_KINDS, feature_kind, feature_tag
from polymodal.observability.metrics import UsageMetrics

DEPLOYMENTS = ["fake-openai", "fake-anthropic", "local-chat"]
PLANS = ["free", "pro", "enterprise"]


def _series(metrics: UsageMetrics) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for counter in (metrics.tokens, metrics.cost):
        for family in counter.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    found.setdefault(s.name, set()).add(tuple(sorted(s.labels.items())))
    return found


def test_label_cardinality_is_bounded() -> None:
    metrics = UsageMetrics(CollectorRegistry(), deployments=DEPLOYMENTS, plans=PLANS)
    rng = random.Random(7)
    kinds = [*FEATURE_KINDS, "evil", "", "template"]
    for i in range(3000):
        kind = rng.choice(kinds)
        metrics.call(
            plan=rng.choice([*PLANS, "unknown", f"plan-{i}"]),
            feature=f"{kind}:{rng.getrandbits(64):x}" if kind != "api" else "api",
            deployment=rng.choice([*DEPLOYMENTS, f"rogue-{i}"]),
            tokens_in=rng.randint(0, 50),
            tokens_out=rng.randint(0, 50),
            cost=rng.random(),
        )
    plans, feature_kinds, deployments = metrics.label_values()
    series = _series(metrics)
    bound = len(plans) * len(feature_kinds) * len(deployments)
    assert len(series["polymodal_cost_usd_total"]) <= bound
    assert len(series["polymodal_tokens_total"]) <= bound * 2  # direction: in, out
    for labelset in series["polymodal_tokens_total"] | series["polymodal_cost_usd_total"]:
        labels = dict(labelset)
        assert labels["plan"] in plans
        assert labels["feature_kind"] in feature_kinds
        assert labels["deployment"] in deployments
    # With 3000 calls every bucket is hit, and none beyond them exists.
    assert len(series["polymodal_cost_usd_total"]) == bound


def test_feature_tags() -> None:
    assert feature_tag("template", "blog-post") == "template:blog-post"
    assert feature_tag("api") == "api"
    assert feature_kind("chatbot:3f2a") == "chatbot"
    assert feature_kind("media:image") == "media"
    assert feature_kind("whatever:1") == "other"
    for bad in (("nope", "x"), ("template", ""), ("chatbot", "x" * 120)):
        try:
            feature_tag(*bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
