"""A live polymodal server for chatbot tests: every tier routes to one fake OpenAI
upstream, the semantic cache embeds with the real local multilingual-e5-small, and
knowledge-base search is the in-memory `WordRetriever` (tests/chatbots/support.py).

Callers: a developer and a viewer of tenant A, a developer of tenant B; each tenant has
one knowledge base row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from polymodal.db.models import UsageEvent
from polymodal.db.models_rag import KnowledgeBase
from polymodal.db.scope import tenant_session
from polymodal.rag.cached_search import CachedSearch
from polymodal.rag.chatbot_reply import ChatbotReplies
from polymodal.rag.chatbot_setup import semantic_cache
from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.chatbots.support import WordRetriever
from tests.live import LiveServer
from tests.setup_helpers import fake_chat_deployment, routed_to_fake, seed_tenants, sqlite_settings

FAKE_KEY = "sk-fake-upstream-key-chatbots"
ENVIRON = {"FAKE_KEY": FAKE_KEY}


@dataclass
class ChatEnv:
    server: LiveServer
    fake: FakeProvider
    retriever: WordRetriever
    dev_a: str
    viewer_a: str
    dev_b: str
    tenant_a: uuid.UUID
    tenant_b: uuid.UUID
    kb_a: uuid.UUID
    kb_b: uuid.UUID

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    @property
    def chatbots(self) -> ChatbotReplies:
        service = self.server.state.chatbots
        assert service is not None
        return service

    def client(self, key: str | None = None) -> httpx.Client:
        return self.server.client(key or self.dev_a, path="/v1", timeout=60)

    def usage_rows(self, feature: str) -> list[UsageEvent]:
        self.server.call(self.server.state.usage.flush())

        async def rows() -> list[UsageEvent]:
            async with self.server.state.sessions() as s:
                q = select(UsageEvent).where(UsageEvent.feature == feature)
                return list((await s.execute(q.order_by(UsageEvent.id))).scalars())

        return self.server.call(rows())

    def add_kb(self, tenant_id: uuid.UUID, name: str) -> uuid.UUID:
        async def insert() -> uuid.UUID:
            async with tenant_session(self.server.state.sessions, tenant_id) as s:
                async with s.begin():
                    kb = KnowledgeBase(
                        tenant_id=tenant_id,
                        name=name,
                        embedding_model="local-e5-small",
                        dimensions=384,
                        version=1,
                    )
                    s.add(kb)
                return kb.id

        return self.server.call(insert())

    def bump_kb(self, tenant_id: uuid.UUID, kb_id: uuid.UUID) -> int:
        """A KB's content changed: its version goes up (as ingestion does)."""

        async def bump() -> int:
            async with tenant_session(self.server.state.sessions, tenant_id) as s, s.begin():
                query = select(KnowledgeBase).where(KnowledgeBase.id == kb_id)
                kb = (await s.execute(query)).scalar_one()
                kb.version += 1
                return kb.version

        version = self.server.call(bump())
        self.retriever.versions[kb_id] = version
        return version

    def chatbot(self, key: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {
            "name": f"bot-{uuid.uuid4().hex[:8]}",
            "kb_ids": [str(self.kb_a)],
            "relevance_threshold": 0.2,
            **fields,
        }
        with self.client(key) as c:
            r = c.post("/chatbots", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def _settings(tmp: Path, fake: FakeProvider, **overrides: Any) -> Settings:
    return sqlite_settings(
        tmp,
        "chatbots.db",
        **routed_to_fake(
            fake_chat_deployment(fake, "fake-writer"),
            upstream_first_byte_timeout_s=5.0,
            upstream_idle_timeout_s=5.0,
            upstream_total_timeout_s=20.0,
            chatbot_summary_trigger_tokens=120,
            chatbot_history_messages=2,
            **overrides,
        ),
    )


PEOPLE = {
    "bots-a": [("dev@a.test", "developer"), ("viewer@a.test", "viewer")],
    "bots-b": [("dev@b.test", "developer")],
}


@pytest.fixture(scope="session")
def cenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatEnv]:
    tmp = tmp_path_factory.mktemp("chatbots")
    retriever = WordRetriever()
    with FakeProvider(wire="openai", api_key=FAKE_KEY) as fake:
        settings = _settings(tmp, fake)
        made = asyncio.run(seed_tenants(settings, PEOPLE))
        with LiveServer(settings, ENVIRON) as server:
            state = server.state
            assert state.chatbots is not None
            state.chatbots.search = CachedSearch(
                retriever=retriever,
                cache=semantic_cache(settings, state.cache),
                metrics=state.chatbots.metrics,
            )
            env = ChatEnv(
                server=server,
                fake=fake,
                retriever=retriever,
                dev_a=made.keys["dev@a.test"],
                viewer_a=made.keys["viewer@a.test"],
                dev_b=made.keys["dev@b.test"],
                tenant_a=made.tenant_ids["bots-a"],
                tenant_b=made.tenant_ids["bots-b"],
                kb_a=uuid.UUID(int=0),
                kb_b=uuid.UUID(int=0),
            )
            env.kb_a = env.add_kb(env.tenant_a, "handbook")
            env.kb_b = env.add_kb(env.tenant_b, "handbook")
            yield env


@pytest.fixture(autouse=True)
def _clean_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cenv" in request.fixturenames:
        cenv: ChatEnv = request.getfixturevalue("cenv")
        cenv.fake.reset()
        cenv.server.state.health.reset()
