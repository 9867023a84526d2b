"""Wiring for the composition root: the HTTP client, providers, catalog, gateway and
usage recorder, built from settings (used by the app factory and the CLI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.cache.memory import TTLCache
from polymodal.cache.pubsub import Broadcaster, LocalBroadcaster, RedisBroadcaster
from polymodal.cache.redis import RedisCache
from polymodal.db import repositories
from polymodal.db.scope import tenant_session
from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import EmbeddingRequest
from polymodal.domain.principal import Principal
from polymodal.gateway import language
from polymodal.gateway.catalog import Catalog, build_catalog
from polymodal.gateway.classifier import Classifier
from polymodal.gateway.executor import Executor, RetryBudget
from polymodal.gateway.health import HealthPolicy, HealthRegistry, LoopLag
from polymodal.gateway.planner import Planner
from polymodal.gateway.routing import TIERS, RouteTable, TenantPolicy
from polymodal.gateway.service import CallContext, Gateway
from polymodal.gateway.tokens import count_tokens
from polymodal.observability.economics import EconomicsMetrics
from polymodal.observability.metrics import GatewayMetrics, UsageMetrics
from polymodal.providers import registry
from polymodal.providers.base import Deadlines, Provider, ProviderContext
from polymodal.providers.http import Upstream
from polymodal.settings import Settings
from polymodal.tenancy.budgets import MemoryBudgets, RedisBudgets
from polymodal.tenancy.economics import Economics
from polymodal.tenancy.limits import MemoryLimiter, RedisLimiter
from polymodal.tenancy.spool import Spool
from polymodal.tenancy.usage import UsageRecorder


def http_client(settings: Settings) -> Upstream:
    """The process's one pooled upstream client (keep-alive)."""
    return Upstream(max_connections=settings.upstream_max_connections)


def deadlines(settings: Settings) -> Deadlines:
    return Deadlines(
        connect_s=settings.upstream_connect_timeout_s,
        first_byte_s=settings.upstream_first_byte_timeout_s,
        idle_s=settings.upstream_idle_timeout_s,
        total_s=settings.upstream_total_timeout_s,
    )


def providers(settings: Settings, http: Upstream) -> dict[str, Provider]:
    context = ProviderContext(
        http=http,
        local_threads=settings.local_threads,
        local_max_concurrency=settings.local_max_concurrency,
        local_context_size=settings.local_context_size,
    )
    return {wire: registry.create(wire, context) for wire in registry.wires()}


def catalog(
    settings: Settings,
    environ: Mapping[str, str],
    by_wire: Mapping[str, Provider],
    *,
    http: Upstream | None = None,
) -> Catalog:
    """The deployments; ``http``, the providers' client, learns which ones speak HTTP/2."""

    def unavailable(d: Deployment) -> str | None:
        check = getattr(by_wire[d.provider], "unavailable_reason", None)
        return check(d) if check is not None else None

    built = build_catalog(
        settings, environ=environ, wires=by_wire.keys(), unavailable_reason=unavailable
    )
    if http is not None:
        http.use_http2(d.base_url for d in built if d.http2 and d.base_url)
    return built


def routes(settings: Settings, catalog: Catalog) -> RouteTable:
    spec = settings.routes
    table = RouteTable(
        tiers={
            "simple": tuple(spec.simple),
            "complex": tuple(spec.complex),
            "critical": tuple(spec.critical),
        },
        tasks={
            task: {tier: tuple(names) for tier, names in by_tier.items()}
            for task, by_tier in spec.tasks.items()
        },
        hedge_delay_s={tier: ms / 1000 for tier, ms in spec.hedge_ms.items()},
    )
    table.validate(catalog)
    return table


def health(settings: Settings) -> HealthRegistry:
    return HealthRegistry(
        HealthPolicy(
            consecutive_failures=settings.breaker_consecutive_failures,
            failure_rate=settings.breaker_failure_rate,
            rate_window_s=settings.breaker_window_s,
            rate_min_calls=settings.breaker_min_calls,
            open_s=settings.breaker_open_s,
            max_open_s=settings.breaker_max_open_s,
            first_byte_floor_s=settings.first_byte_floor_s,
            first_byte_ceiling_s=settings.upstream_first_byte_timeout_s,
            first_byte_multiplier=settings.first_byte_multiplier,
            latency_ceiling_s=settings.upstream_total_timeout_s,
            idle_floor_s=settings.stream_idle_floor_s,
            idle_ceiling_s=settings.upstream_idle_timeout_s,
            idle_multiplier=settings.stream_idle_multiplier,
        )
    )


def broadcaster(settings: Settings, cache: Cache) -> Broadcaster:
    if isinstance(cache, RedisCache):
        return RedisBroadcaster(cache.client, prefix=settings.redis_key_prefix)
    return LocalBroadcaster()


def tenant_policies(
    sessions: async_sessionmaker[AsyncSession], *, ttl_s: float
) -> Callable[[Principal], Awaitable[TenantPolicy]]:
    """Tenant routing policy, cached per process like API keys (same staleness bound)."""
    cached: TTLCache[TenantPolicy] = TTLCache(max_entries=10_000)

    async def lookup(principal: Principal) -> TenantPolicy:
        key = str(principal.tenant_id)
        policy = cached.get(key)
        if policy is None:
            async with tenant_session(sessions, principal.tenant_id) as session:
                raw = await repositories.get_tenant_policy(session, tenant_id=principal.tenant_id)
            policy = policy_from_dict(raw)
            cached.set(key, policy, ttl_s=ttl_s)
        return policy

    return lookup


def policy_from_dict(raw: Mapping[str, object]) -> TenantPolicy:
    def names(key: str) -> frozenset[str]:
        value = raw.get(key) or []
        return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()

    max_tier = str(raw.get("max_tier") or "critical")
    default_tier = raw.get("default_tier")
    return TenantPolicy(
        allowed_providers=names("allowed_providers"),
        allowed_deployments=names("allowed_deployments"),
        max_tier=max_tier if max_tier in TIERS else "critical",
        default_tier=str(default_tier) if default_tier in TIERS else None,
        continue_streams=bool(raw.get("continue_streams", True)),
    )


def economics(
    settings: Settings,
    *,
    cache: Cache,
    sessions: async_sessionmaker[AsyncSession],
    metrics: EconomicsMetrics | None,
) -> Economics:
    """Rate limits and budgets: shared through Redis when the cache is Redis, else
    in-process (one process)."""
    if isinstance(cache, RedisCache):
        limiter: MemoryLimiter | RedisLimiter = RedisLimiter(
            cache.client, prefix=settings.redis_key_prefix
        )
        store: MemoryBudgets | RedisBudgets = RedisBudgets(
            cache.client, prefix=settings.redis_key_prefix
        )
    else:
        limiter, store = MemoryLimiter(), MemoryBudgets()
    return Economics(
        limiter=limiter,
        store=store,
        sessions=sessions,
        plans={
            name: (p.requests_per_minute, p.tokens_per_minute)
            for name, p in settings.plan_limits.items()
        },
        rate_limits=settings.rate_limits_enabled,
        reservation_ttl_s=settings.budget_reservation_ttl_s,
        alert_thresholds=tuple(settings.budget_alert_thresholds),
        cache_ttl_s=settings.limits_cache_ttl_s,
        metrics=metrics,
    )


def gateway(
    settings: Settings,
    *,
    catalog: Catalog,
    providers: Mapping[str, Provider],
    sessions: async_sessionmaker[AsyncSession],
    registry: HealthRegistry,
    metrics: GatewayMetrics | None,
    lag: LoopLag | None = None,
    usage_metrics: UsageMetrics | None = None,
    meter: Economics | None = None,
) -> tuple[Gateway, UsageRecorder]:
    recorder = UsageRecorder(
        sessions,
        flush_interval_s=settings.usage_flush_interval_s,
        batch_size=settings.usage_batch_size,
        max_pending=settings.usage_max_pending,
        spool=Spool(
            settings.usage_spool_dir or settings.data_dir / "usage-spool",
            max_bytes=settings.usage_spool_max_bytes,
        ),
        metrics=usage_metrics,
        plan_ttl_s=settings.auth_cache_ttl_s,
    )
    planner = Planner(
        catalog=catalog,
        providers=providers,
        routes=routes(settings, catalog),
        classifier=Classifier(count_tokens=count_tokens, detect_language=language.detect),
        count_tokens=count_tokens,
    )
    executor = Executor(
        providers=providers,
        health=registry,
        deadlines=deadlines(settings),
        max_attempts=settings.max_attempts,
        budget=RetryBudget(
            ratio=settings.retry_budget_ratio, floor_per_s=settings.retry_budget_floor_per_s
        ),
        lag=lag,
    )
    gw = Gateway(
        planner=planner,
        executor=executor,
        recorder=recorder,
        count_tokens=count_tokens,
        default_embedding_model=settings.default_embedding_model,
        continuation=settings.stream_continuation,
        always_stream=settings.upstream_always_stream,
        policies=tenant_policies(sessions, ttl_s=settings.auth_cache_ttl_s),
        metrics=metrics,
        meter=meter,
        estimate_output_tokens=settings.estimate_output_tokens,
    )
    return gw, recorder


class GatewayEmbeddings:
    """The gateway as knowledge bases see it (`polymodal.rag.embedding.EmbeddingModels`):
    services do not import each other, so the composition root joins them here."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def resolve(self, name: str) -> Deployment:
        return self._gateway.catalog.resolve(name, kind="embeddings")

    async def embed(
        self,
        *,
        principal: Principal,
        feature: str,
        model: str,
        texts: list[str],
        kind: Literal["query", "document"],
        rate_limited: bool,
    ) -> list[list[float]]:
        result, _d = await self._gateway.embed(
            CallContext(principal, feature, rate_limited=rate_limited),
            EmbeddingRequest(model=model, inputs=texts, input_type=kind),
        )
        return result.vectors


def gateway_embeddings(gateway: Gateway) -> GatewayEmbeddings:
    return GatewayEmbeddings(gateway)
