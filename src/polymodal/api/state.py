"""What the app factory builds once per process and routes reach through `request.app`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.gateway.health import HealthRegistry
from polymodal.gateway.service import Gateway
from polymodal.observability.metrics import HttpMetrics
from polymodal.providers.http import Upstream
from polymodal.rag.chatbot_reply import ChatbotReplies
from polymodal.rag.service import KnowledgeService
from polymodal.settings import Settings
from polymodal.templates.service import TemplateService
from polymodal.tenancy.authn import Authenticator
from polymodal.tenancy.economics import Economics
from polymodal.tenancy.identity_factory import Identity
from polymodal.tenancy.usage import UsageRecorder


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    authenticator: Authenticator  # API keys, access tokens, external OIDC tokens
    metrics: HttpMetrics
    http: Upstream
    gateway: Gateway
    usage: UsageRecorder
    health: HealthRegistry
    economics: Economics
    templates: TemplateService
    identity: Identity
    chatbots: ChatbotReplies | None = None  # RAG chatbots (set after the rest)
    knowledge: KnowledgeService | None = None  # knowledge bases (set after the rest)
