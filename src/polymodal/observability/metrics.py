"""Prometheus metrics. Route labels are route templates, never raw paths, so label
cardinality stays bounded."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

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

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        s = str(status)
        self.requests.labels(route, method, s).inc()
        self.latency.labels(route, method, s).observe(seconds)


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
        self.cost = Counter(
            "polymodal_cost_usd_total",
            "Model cost in USD by deployment.",
            ["deployment"],
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
        deployment: str,
        cost: float,
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
        if cost:
            self.cost.labels(deployment).inc(cost)
