"""Prometheus metrics. Route labels are route templates, never raw paths, so label
cardinality stays bounded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from polymodal.domain.usage import FEATURE_KINDS, OTHER, feature_kind

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class HttpMetrics:
    """The API's request metrics, in a registry of their own (one per app instance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "polymodal_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "polymodal_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the update: do them once
            s = str(status)
            children = (
                self.requests.labels(route, method, s),
                self.latency.labels(route, method, s),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class GatewayMetrics:
    """Routing and failover metrics. Labels are tiers, tasks, deployment ids and error
    codes: all bounded sets (the catalog, DESIGN.md's error classes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "polymodal_route_decisions_total",
            "Route decisions by tier and task.",
            ["tier", "task"],
            registry=registry,
        )
        self.attempts = Counter(
            "polymodal_upstream_attempts_total",
            "Upstream attempts by deployment and outcome (ok or error code).",
            ["deployment", "outcome"],
            registry=registry,
        )
        self.failovers = Counter(
            "polymodal_failovers_total",
            "Moves to another deployment, by cause (the failed attempt's error code).",
            ["cause"],
            registry=registry,
        )
        self.failover_seconds = Histogram(
            "polymodal_failover_seconds",
            "Time spent on failed attempts before the answer (requests that failed over).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.breaker_state = Gauge(
            "polymodal_breaker_state",
            "Breaker state per deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            registry=registry,
        )

    def decision(self, tier: str, task: str) -> None:
        self.decisions.labels(tier, task).inc()

    def call(
        self,
        *,
        attempts: list[tuple[str, str]],
        failover_s: float,
    ) -> None:
        failed = False
        for name, outcome in attempts:
            if outcome.startswith("skipped"):
                continue
            self.attempts.labels(name, outcome).inc()
            if outcome not in ("ok", "hedged"):
                failed = True
                self.failovers.labels(outcome).inc()
        if failed:
            self.failover_seconds.observe(failover_s)


class TemplateMetrics:
    """Content-template generations: retries for a wrong output language and JSON repairs.
    Labels are the 11 product languages and fixed outcomes: bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.generations = Counter(
            "polymodal_template_generations_total",
            "Template generations by output language and format.",
            ["language", "format"],
            registry=registry,
        )
        self.language_retries = Counter(
            "polymodal_template_language_retries_total",
            "Generations retried because the answer was in the wrong language, by the "
            "expected language and whether the retry fixed it (fixed, still_wrong).",
            ["language", "outcome"],
            registry=registry,
        )
        self.json_repairs = Counter(
            "polymodal_template_json_repairs_total",
            "JSON answers that broke the template's schema and were sent back once for "
            "repair, by outcome (repaired, failed).",
            ["outcome"],
            registry=registry,
        )

    def generation(self, language: str, fmt: str) -> None:
        self.generations.labels(language, fmt).inc()

    def language_retry(self, language: str, *, fixed: bool) -> None:
        self.language_retries.labels(language, "fixed" if fixed else "still_wrong").inc()

    def json_repair(self, *, repaired: bool) -> None:
        self.json_repairs.labels("repaired" if repaired else "failed").inc()


class UsageMetrics:
    """Tokens and cost from the usage ledger, and the ledger's own losses.

    Labels are bounded by construction: ``plan`` is one of the known plans, ``feature_kind``
    the part of the feature tag before ``:`` (api, template, chatbot, pipeline, media),
    ``deployment`` a catalog id; anything else is counted as ``other``. Counted when the
    ledger writer takes rows off its queue, not per request (no work on the hot path).
    """

    def __init__(
        self, registry: CollectorRegistry, *, deployments: Iterable[str], plans: Iterable[str]
    ) -> None:
        self._deployments = frozenset(deployments)
        self._plans = frozenset(plans)
        self.tokens = Counter(
            "polymodal_tokens_total",
            "Model tokens by tenant plan, feature kind, deployment and direction (in, out).",
            ["plan", "feature_kind", "deployment", "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "polymodal_cost_usd_total",
            "Model cost in USD by tenant plan, feature kind and deployment.",
            ["plan", "feature_kind", "deployment"],
            registry=registry,
        )
        self.dropped = Counter(
            "polymodal_usage_rows_dropped_total",
            "Usage ledger rows lost, by reason (queue_full, spool_corrupt, tenant_gone).",
            ["reason"],
            registry=registry,
        )
        self.spool_errors = Counter(
            "polymodal_usage_spool_errors_total",
            "Usage rows that could not be appended to the crash spool (kept in memory only).",
            registry=registry,
        )
        self.backlog = Gauge(
            "polymodal_usage_backlog_rows",
            "Usage rows queued or spooled and not yet in the database.",
            registry=registry,
        )

    def label_values(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """Every value each label can take (plans, feature kinds, deployments)."""
        return (
            self._plans | {OTHER},
            FEATURE_KINDS | {OTHER},
            self._deployments | {OTHER},
        )

    def call(
        self,
        *,
        plan: str,
        feature: str,
        deployment: str,
        tokens_in: int,
        tokens_out: int,
        cost: float,
    ) -> None:
        p = plan if plan in self._plans else OTHER
        f = feature_kind(feature)
        d = deployment if deployment in self._deployments else OTHER
        if tokens_in:
            self.tokens.labels(p, f, d, "in").inc(tokens_in)
        if tokens_out:
            self.tokens.labels(p, f, d, "out").inc(tokens_out)
        if cost:
            self.cost.labels(p, f, d).inc(cost)
