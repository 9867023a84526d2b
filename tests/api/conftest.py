"""A live polymodal server in front of one fake provider per wire, plus the local models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polymodal.settings import Settings
from polymodal.testing import FakeProvider
from tests.live import LiveServer
from tests.setup_helpers import seed_tenants, sqlite_settings

FAKE_KEY = "sk-fake-upstream-key-0123456789"
ENVIRON = {"FAKE_KEY": FAKE_KEY}


def fake_deployments(fakes: dict[str, FakeProvider]) -> list[dict[str, Any]]:
    def chat(id_: str, wire: str, model: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": id_,
            "provider": wire,
            "model": model,
            "base_url": fakes[wire].base_url,
            "api_key_env": "FAKE_KEY",
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "context_window": 1000,
            "max_output_tokens": 500,
            "capabilities": ["chat", "tools", "json", "vision"],
            **extra,
        }

    def embed(id_: str, wire: str, model: str, dims: int) -> dict[str, Any]:
        return {
            "id": id_,
            "provider": wire,
            "model": model,
            "base_url": fakes[wire].base_url,
            "api_key_env": "FAKE_KEY",
            "price": {"input_per_mtok": 0.5},
            "context_window": 8000,
            "dimensions": dims,
            "capabilities": ["embeddings"],
        }

    return [
        chat("fake-openai", "openai", "gpt-4o-mini"),
        chat("fake-anthropic", "anthropic", "claude-3-5-haiku-latest"),
        chat("fake-gemini", "gemini", "gemini-2.5-flash"),
        chat("fake-no-key", "openai", "gpt-nokey", api_key_env="UNSET_KEY_VAR"),
        embed("fake-openai-embed", "openai", "text-embedding-3-small", 1536),
        embed("fake-gemini-embed", "gemini", "text-embedding-004", 768),
        embed("fake-cohere-embed", "cohere", "embed-multilingual-v3.0", 1024),
    ]


@dataclass
class Env:
    server: LiveServer
    fakes: dict[str, FakeProvider]
    key: str
    tenant_id: str

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    def flush_usage(self) -> None:
        self.server.call(self.server.state.usage.flush())


def _settings(tmp: Path, fakes: dict[str, FakeProvider], **overrides: Any) -> Settings:
    return sqlite_settings(
        tmp,
        "api.db",
        deployments=fake_deployments(fakes),
        upstream_first_byte_timeout_s=1.0,
        upstream_idle_timeout_s=1.0,
        upstream_total_timeout_s=5.0,  # room for the local model on a busy 2-core machine
        usage_flush_interval_s=60,  # tests flush explicitly
        # Whole (non-streamed) upstream calls, so body faults such as malformed JSON apply;
        # tests/gateway covers both modes.
        upstream_always_stream=False,
        **overrides,
    )


async def _prepare(settings: Settings) -> tuple[str, str]:
    made = await seed_tenants(settings, {"api-tests": [("dev@api.test", "developer")]})
    return made.keys["dev@api.test"], str(made.tenant_ids["api-tests"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("api")
    fakes = {
        w: FakeProvider(wire=w, api_key=FAKE_KEY)
        for w in ("openai", "anthropic", "gemini", "cohere")
    }
    for fake in fakes.values():
        fake.start()
    settings = _settings(tmp, fakes)
    key, tenant_id = asyncio.run(_prepare(settings))
    try:
        with LiveServer(settings, ENVIRON) as server:
            yield Env(server=server, fakes=fakes, key=key, tenant_id=tenant_id)
    finally:
        for fake in fakes.values():
            fake.stop()


@pytest.fixture(autouse=True)
def _clean_fakes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "env" in request.fixturenames:
        env = request.getfixturevalue("env")
        for fake in env.fakes.values():
            fake.reset()
        # These tests are about error mapping: start each with healthy deployments.
        env.server.state.health.reset()
