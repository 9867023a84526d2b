"""The app factory: the one composition root. Everything the process shares is built
here from one `Settings` and handed down; nothing below reads the environment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from polymodal import __version__
from polymodal import wiring as factory
from polymodal.api import db_errors, health
from polymodal.api.body import install_schemas
from polymodal.api.errors import install_error_handlers
from polymodal.api.middleware import HotRoutes, RequestContextMiddleware
from polymodal.api.state import AppState
from polymodal.api.v1 import audit as audit_api
from polymodal.api.v1 import auth as auth_api
from polymodal.api.v1 import budgets, me, openai_compat, routing, templates
from polymodal.api.v1 import chatbots as chatbots_api
from polymodal.api.v1 import keys as keys_api
from polymodal.api.v1 import knowledge as knowledge_api
from polymodal.api.v1 import members as members_api
from polymodal.api.v1 import usage as usage_api
from polymodal.cache import open_cache
from polymodal.db.engine import create_engine, session_factory
from polymodal.gateway.health import LoopLag
from polymodal.gateway.health_bus import SharedHealthBus
from polymodal.gateway.tokens import count_tokens
from polymodal.gateway.tokens import warm_up as warm_up_tokenizer
from polymodal.observability.chatbot_metrics import ChatbotMetrics
from polymodal.observability.economics import EconomicsMetrics
from polymodal.observability.logging import configure_logging, get_logger
from polymodal.observability.metrics import (
    GatewayMetrics,
    HttpMetrics,
    TemplateMetrics,
    UsageMetrics,
)
from polymodal.rag import answer as chatbot_answer
from polymodal.rag import runtime as rag_runtime
from polymodal.rag.chatbot_setup import build_chatbots
from polymodal.rag.jobs import JobQueue
from polymodal.settings import Settings, load_settings
from polymodal.templates import language as template_language
from polymodal.templates.catalog import builtin_catalog
from polymodal.templates.service import TemplateService
from polymodal.tenancy.admin import PLANS
from polymodal.tenancy.identity_factory import build_identity


class PolymodalAPI(FastAPI):
    """FastAPI with polymodal's request-context layer (ids, limits on bodies, metrics,
    access log, a JSON 500 for anything unhandled) and the hot routes outside FastAPI's
    own middleware stack: the OpenAI-compatible endpoints then skip its error and
    telemetry layers, which every response message would otherwise pass through."""

    outer: Callable[[ASGIApp], ASGIApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        return inner if self.outer is None else self.outer(inner)


def create_app(
    settings: Settings | None = None, *, environ: Mapping[str, str] | None = None
) -> FastAPI:
    """Build the API. ``environ`` supplies provider keys (``api_key_env``); it defaults to
    the process environment, read here and nowhere below."""
    settings = settings or load_settings()
    environ = os.environ if environ is None else environ
    configure_logging(level=settings.log_level, json=settings.log_json)
    metrics = HttpMetrics()
    # Built before serving so a bad catalog stops start-up, not the first request.
    http = factory.http_client(settings)
    providers = factory.providers(settings, http)
    catalog = factory.catalog(settings, environ, providers, http=http)
    factory.routes(settings, catalog)  # a route naming a missing deployment stops start-up
    gateway_metrics = GatewayMetrics(metrics.registry)
    usage_metrics = UsageMetrics(
        metrics.registry,
        deployments=[d.id for d in catalog],
        plans={*PLANS, *settings.plan_limits},  # bounded: the configured plans
    )
    health_registry = factory.health(settings)
    template_catalog = builtin_catalog()  # a broken catalog file stops start-up, named
    template_metrics = TemplateMetrics(metrics.registry)
    chatbot_metrics = ChatbotMetrics(metrics.registry)
    economics_metrics = EconomicsMetrics(metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        sessions = session_factory(engine)
        cache = open_cache(settings)
        lag = LoopLag()
        lag.start()
        economics = factory.economics(
            settings, cache=cache, sessions=sessions, metrics=economics_metrics
        )
        gateway, usage = factory.gateway(
            settings,
            catalog=catalog,
            providers=providers,
            sessions=sessions,
            registry=health_registry,
            metrics=gateway_metrics,
            lag=lag,
            usage_metrics=usage_metrics,
            meter=economics,
        )
        broadcaster = factory.broadcaster(settings, cache)
        bus = SharedHealthBus(broadcaster, cache)
        await bus.attach(health_registry, [d.id for d in catalog])
        await usage.start()
        await asyncio.to_thread(warm_up_tokenizer)  # ~1 s once, not on the first request
        await asyncio.to_thread(template_language.warm_up)
        await asyncio.to_thread(chatbot_answer.warm_up)
        identity = build_identity(settings, sessions, cache)
        await identity.start()  # a signing key exists and is within its rotation age
        app.state.polymodal = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            cache=cache,
            authenticator=identity.authenticator,
            identity=identity,
            metrics=metrics,
            http=http,
            gateway=gateway,
            usage=usage,
            health=health_registry,
            economics=economics,
            templates=TemplateService(
                catalog=template_catalog, sessions=sessions, metrics=template_metrics
            ),
        )
        embeddings = factory.gateway_embeddings(gateway)
        rag = rag_runtime.build(
            settings,
            sessions=sessions,
            models=embeddings,
            cache=rag_runtime.embedding_store(settings, cache),
        )
        ingest_runner = None
        rag_runtime.check_queue(settings)
        if rag_runtime.uses_celery(settings):
            from polymodal.worker import CeleryQueue

            ingest_queue: JobQueue = CeleryQueue(settings)
        else:
            ingest_queue = ingest_runner = rag_runtime.runner(settings, rag, sessions)
        app.state.polymodal.knowledge = rag_runtime.service(
            settings, rag, sessions=sessions, models=embeddings, queue=ingest_queue
        )
        if ingest_runner is not None:
            await ingest_runner.start()  # resumes jobs a previous process left unfinished
        app.state.polymodal.chatbots = build_chatbots(
            settings,
            sessions=sessions,
            cache=cache,
            retriever=rag.retriever,
            count_tokens=count_tokens,
            metrics=chatbot_metrics,
            query_embedder=rag.embedder,  # the semantic cache shares the KB embedding cache
        )
        get_logger("polymodal").info("started", version=__version__, **settings.profile())
        try:
            yield
        finally:
            if ingest_runner is not None:
                await ingest_runner.stop()  # unfinished jobs resume at the next start
            rag.close()
            await economics.drain()  # settle what is in flight before the ledger's last flush
            await usage.stop()
            await lag.stop()
            await bus.close()
            await broadcaster.close()
            for provider in providers.values():
                await provider.aclose()
            await identity.close()
            await http.aclose()
            await cache.close()
            await engine.dispose()

    app = PolymodalAPI(
        title="polymodal",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # FastAPI's native OpenTelemetry checks for a configured SDK on every request
        # (~3% of a chat request's CPU); polymodal exports Prometheus metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    db_errors.install(app)
    install_schemas(app)
    app.outer = lambda inner: RequestContextMiddleware(
        HotRoutes(inner, routes=openai_compat.hot_routes(), handlers=app),
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        access_log=settings.access_log,
    )
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(openai_compat.router)
    app.include_router(routing.router)
    app.include_router(templates.router)
    app.include_router(chatbots_api.router)
    app.include_router(auth_api.router)
    app.include_router(members_api.router)
    app.include_router(keys_api.router)
    app.include_router(budgets.router)
    app.include_router(knowledge_api.router)
    app.include_router(usage_api.router)
    app.include_router(audit_api.router)
    return app
