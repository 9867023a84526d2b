"""Live polymodal servers in front of fake upstreams, set up for failover scenarios.

Deployments: ``primary`` and ``backup`` and ``third`` (OpenAI wire, each its own fake),
``claude`` (Anthropic wire), ``dead`` (a port that refuses connections). Every tier routes
``primary -> backup -> third``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from polymodal.settings import Settings
from polymodal.testing import FakeProvider, RefusedPort
from tests.conftest import make_settings
from tests.live import LiveServer
from tests.setup_helpers import seed_tenants

KEY = "sk-upstream"
ENVIRON = {"UPSTREAM_KEY": KEY}
BACKUP_TEXT = "answer from the backup"


def _deployment(id_: str, wire: str, base_url: str, model: str) -> dict[str, Any]:
    return {
        "id": id_,
        "provider": wire,
        "model": model,
        "base_url": base_url,
        "api_key_env": "UPSTREAM_KEY",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "context_window": 8000,
        "capabilities": ["chat", "tools", "json"],
    }


@dataclass
class Stack:
    fakes: dict[str, FakeProvider]
    refused: RefusedPort
    tmp: Path
    key: str
    settings: Settings

    def client(self, server: LiveServer) -> httpx.Client:
        return httpx.Client(
            base_url=server.base_url + "/v1",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )

    def reset(self) -> None:
        for fake in self.fakes.values():
            fake.reset()
        self.fakes["backup"].set_default_reply(BACKUP_TEXT)
        self.fakes["third"].set_default_reply("answer from the third")


def stack_settings(
    tmp: Path, fakes: dict[str, FakeProvider], refused: RefusedPort, **overrides: Any
) -> Settings:
    deployments = [
        _deployment("primary", "openai", fakes["primary"].base_url, "gpt-primary"),
        _deployment("backup", "openai", fakes["backup"].base_url, "gpt-backup"),
        _deployment("third", "openai", fakes["third"].base_url, "gpt-third"),
        _deployment("claude", "anthropic", fakes["claude"].base_url, "claude-3-5-haiku-latest"),
        _deployment("dead", "openai", refused.base_url, "gpt-dead"),
    ]
    route = ["primary", "backup", "third"]
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'gw.db'}",
        "data_dir": tmp,
        "deployments": deployments,
        "shipped_catalog": False,
        "default_model": "primary",
        "default_embedding_model": "primary",
        "routes": {"simple": route, "complex": route, "critical": route},
        "upstream_first_byte_timeout_s": 3.0,
        "upstream_idle_timeout_s": 0.5,
        "upstream_total_timeout_s": 5.0,
        "usage_flush_interval_s": 60,
    }
    values.update(overrides)
    return make_settings(**values)


async def _prepare(settings: Settings) -> str:
    name = f"gw-{uuid.uuid4().hex[:6]}"
    email = f"dev@{name}.test"
    return (await seed_tenants(settings, {name: [(email, "developer")]})).keys[email]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gw")
    fakes = {
        name: FakeProvider(wire="anthropic" if name == "claude" else "openai", api_key=KEY)
        for name in ("primary", "backup", "third", "claude")
    }
    for fake in fakes.values():
        fake.start()
    refused = RefusedPort("openai")
    settings = stack_settings(tmp, fakes, refused)
    key = asyncio.run(_prepare(settings))
    s = Stack(fakes, refused, tmp, key, settings)
    s.reset()
    try:
        yield s
    finally:
        for fake in fakes.values():
            fake.stop()
        refused.close()


@pytest.fixture(params=["stream", "whole"])
def server(stack: Stack, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """A fresh server per test (breakers and health start clean), calling upstreams in
    streaming mode (the default) or asking for whole answers for non-streaming requests."""
    stack.reset()
    settings = stack.settings
    if request.param == "whole":
        settings = settings.model_copy(update={"upstream_always_stream": False})
    with LiveServer(settings, ENVIRON) as live:
        yield live
