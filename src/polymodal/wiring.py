"""Wiring for the composition root: the HTTP client, providers, catalog, gateway and
usage recorder, built from settings (used by the app factory and the CLI)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from polymodal.domain.catalog import Deployment
from polymodal.gateway.catalog import Catalog, build_catalog
from polymodal.gateway.service import Gateway
from polymodal.gateway.tokens import count_tokens
from polymodal.providers import registry
from polymodal.providers.base import Deadlines, Provider, ProviderContext
from polymodal.settings import Settings
from polymodal.tenancy.usage import UsageRecorder


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The process's one pooled client: keep-alive, HTTP/2 where the provider offers it."""
    return httpx.AsyncClient(
        http2=True,
        limits=httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_connections,
            keepalive_expiry=30,
        ),
        timeout=httpx.Timeout(settings.upstream_total_timeout_s),
        follow_redirects=False,
    )


def deadlines(settings: Settings) -> Deadlines:
    return Deadlines(
        connect_s=settings.upstream_connect_timeout_s,
        first_byte_s=settings.upstream_first_byte_timeout_s,
        idle_s=settings.upstream_idle_timeout_s,
        total_s=settings.upstream_total_timeout_s,
    )


def providers(settings: Settings, http: httpx.AsyncClient) -> dict[str, Provider]:
    context = ProviderContext(
        http=http,
        local_threads=settings.local_threads,
        local_max_concurrency=settings.local_max_concurrency,
        local_context_size=settings.local_context_size,
    )
    return {wire: registry.create(wire, context) for wire in registry.wires()}


def catalog(
    settings: Settings, environ: Mapping[str, str], by_wire: Mapping[str, Provider]
) -> Catalog:
    def unavailable(d: Deployment) -> str | None:
        check = getattr(by_wire[d.provider], "unavailable_reason", None)
        return check(d) if check is not None else None

    return build_catalog(
        settings, environ=environ, wires=by_wire.keys(), unavailable_reason=unavailable
    )


def gateway(
    settings: Settings,
    *,
    catalog: Catalog,
    providers: Mapping[str, Provider],
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[Gateway, UsageRecorder]:
    recorder = UsageRecorder(
        sessions,
        flush_interval_s=settings.usage_flush_interval_s,
        batch_size=settings.usage_batch_size,
    )
    gw = Gateway(
        catalog=catalog,
        providers=providers,
        recorder=recorder,
        deadlines=deadlines(settings),
        count_tokens=count_tokens,
        default_model=settings.default_model,
        default_embedding_model=settings.default_embedding_model,
    )
    return gw, recorder
