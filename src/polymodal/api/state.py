"""What the app factory builds once per process and routes reach through `request.app`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from polymodal.cache.base import Cache
from polymodal.gateway.health import HealthRegistry
from polymodal.gateway.service import Gateway
from polymodal.observability.metrics import HttpMetrics
from polymodal.providers.http import Upstream
from polymodal.settings import Settings
from polymodal.templates.service import TemplateService
from polymodal.tenancy.auth import KeyAuthenticator
from polymodal.tenancy.economics import Economics
from polymodal.tenancy.usage import UsageRecorder


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    authenticator: KeyAuthenticator
    metrics: HttpMetrics
    http: Upstream
    gateway: Gateway
    usage: UsageRecorder
    health: HealthRegistry
    economics: Economics
    templates: TemplateService
