"""Prometheus metrics of rate limits and budgets. Labels are the plan (a handful of
configured names), the limit kind and the budget subject kind (tenant or key): bounded,
never a tenant or key id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class EconomicsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rate_limited = Counter(
            "polymodal_rate_limit_rejections_total",
            "Calls refused with 429 by a tenant's or key's own limit, by plan and kind "
            "(requests, tokens, too_large).",
            ["plan", "kind"],
            registry=registry,
        )
        self.budget_refusals = Counter(
            "polymodal_budget_rejections_total",
            "Calls refused with 402 by a hard budget, by plan and budget kind (tenant, key).",
            ["plan", "kind"],
            registry=registry,
        )
        self.budget_alerts = Counter(
            "polymodal_budget_alerts_total",
            "Budget alert thresholds crossed (once per budget, month and threshold), by "
            "plan, budget kind and threshold.",
            ["plan", "kind", "threshold"],
            registry=registry,
        )
        self.reserved_usd = Counter(
            "polymodal_budget_reserved_usd_total",
            "Estimated cost reserved against budgets before calls, by plan.",
            ["plan"],
            registry=registry,
        )
        self.settled_usd = Counter(
            "polymodal_budget_settled_usd_total",
            "Actual cost settled against budgets after calls, by plan.",
            ["plan"],
            registry=registry,
        )
        self.degraded = Counter(
            "polymodal_economics_degraded_total",
            "Limit or budget checks that could not reach their store (Redis) or the ledger "
            "and degraded (limits: let the call through), by kind.",
            ["kind"],
            registry=registry,
        )

    def rate_limit(self, plan: str, kind: str) -> None:
        self.rate_limited.labels(plan, kind).inc()

    def budget_refusal(self, plan: str, kind: str) -> None:
        self.budget_refusals.labels(plan, kind).inc()

    def budget_alert(self, plan: str, kind: str, threshold: float) -> None:
        self.budget_alerts.labels(plan, kind, f"{threshold:g}").inc()
