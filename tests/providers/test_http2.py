"""Deployments marked ``http2: true`` are called over HTTP/2: the fake OpenAI provider
served by hypercorn (an HTTP/2 server; uvicorn speaks HTTP/1.1 only) sees version 2 on
every call, non-streaming, streaming and embeddings, and errors map as over HTTP/1.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from polymodal import wiring
from polymodal.domain.chat import ChatRequest, EmbeddingRequest
from polymodal.domain.errors import AuthFailed, Timeout
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.http import Upstream, origin
from polymodal.providers.openai import OpenAIProvider
from polymodal.testing import Faults
from polymodal.testing.fakes.server import create_app
from tests.conftest import make_settings
from tests.providers.support import RELAXED, collect, make_deployment, streamed_text
from tests.support import free_port

KEY = "sk-fake-h2"


class H2Fake:
    """The fake OpenAI app under hypercorn in a thread, recording each call's version."""

    def __init__(self) -> None:
        self.app = create_app("openai", KEY)
        self.versions: list[str] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _recording(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            self.versions.append(scope["http_version"])
        await self.app(scope, receive, send)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_max_requests = 10**9  # hypercorn drops a request at its 1,000th

        async def main() -> None:
            self._stop = asyncio.Event()
            self._ready.set()
            await serve(self._recording, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        self._loop.run_until_complete(main())

    def __enter__(self) -> H2Fake:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def fake() -> Iterator[H2Fake]:
    with H2Fake() as server:
        yield server


@pytest.fixture
async def h2(fake: H2Fake) -> AsyncIterator[Upstream]:
    upstream = Upstream()
    upstream.use_http2([fake.base_url])
    yield upstream
    await upstream.aclose()


def ask(text: str) -> ChatRequest:
    return ChatRequest(model="gpt-4o", messages=[{"role": "user", "content": text}])


async def test_chat_stream_and_embeddings_go_over_http2(fake: H2Fake, h2: Upstream) -> None:
    provider = OpenAIProvider(ProviderContext(http=h2))
    chat = make_deployment("openai", "gpt-4o", fake.base_url, ["chat"], api_key=KEY)
    await asyncio.sleep(0.2)  # hypercorn binds after its event is set
    fake.versions.clear()
    answer = await provider.complete(chat, ask("hello over h2"), RELAXED)
    assert answer["choices"][0]["message"]["content"] == "echo: hello over h2"
    chunks = await collect(provider.stream(chat, ask("streamed over h2"), RELAXED))
    assert streamed_text(chunks) == "echo: streamed over h2"
    embedder = make_deployment(
        "openai", "text-embedding-3-small", fake.base_url, ["embeddings"], api_key=KEY
    )
    vectors = await provider.embed(
        embedder, EmbeddingRequest(model="e", inputs=["a", "b"], dimensions=8), RELAXED
    )
    assert len(vectors.vectors) == 2 and len(vectors.vectors[0]) == 8
    # Concurrent streams share the HTTP/2 connection.
    many = await asyncio.gather(
        *(collect(provider.stream(chat, ask(f"n{i}"), RELAXED)) for i in range(8))
    )
    assert [streamed_text(c) for c in many] == [f"echo: n{i}" for i in range(8)]
    assert fake.versions and set(fake.versions) == {"2"}


async def test_errors_and_deadlines_map_as_over_http1(fake: H2Fake, h2: Upstream) -> None:
    provider = OpenAIProvider(ProviderContext(http=h2))
    wrong_key = make_deployment("openai", "gpt-4o", fake.base_url, ["chat"], api_key="sk-no")
    with pytest.raises(AuthFailed):
        await provider.complete(wrong_key, ask("x"), RELAXED)
    chat = make_deployment("openai", "gpt-4o", fake.base_url, ["chat"], api_key=KEY)
    fake.app.state.fake.set_faults(Faults(latency_ms=600))
    try:
        quick = Deadlines(connect_s=1.0, first_byte_s=0.2, idle_s=0.2, total_s=0.3)
        with pytest.raises(Timeout):
            await provider.complete(chat, ask("slow"), quick)
        with pytest.raises(Timeout):
            await collect(provider.stream(chat, ask("slow"), quick))
    finally:
        fake.app.state.fake.set_faults(Faults())


def test_the_catalog_turns_http2_on_for_marked_deployments_only(fake: H2Fake) -> None:
    settings = make_settings(
        shipped_catalog=False,
        deployments=[
            {
                "id": "h2-openai",
                "provider": "openai",
                "model": "gpt-4o",
                "base_url": fake.base_url,
                "price": {"input_per_mtok": 1, "output_per_mtok": 2},
                "context_window": 1000,
                "capabilities": ["chat"],
                "http2": True,
            },
            {
                "id": "h1-openai",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "base_url": "https://api.example.com/v1",
                "price": {"input_per_mtok": 1, "output_per_mtok": 2},
                "context_window": 1000,
                "capabilities": ["chat"],
            },
        ],
    )
    http = Upstream()
    wiring.catalog(settings, {}, wiring.providers(settings, http), http=http)
    assert http.speaks_http2(fake.base_url + "/chat/completions")
    assert not http.speaks_http2("https://api.example.com/v1/chat/completions")
    assert origin("https://API.example.com/v1") == "https://api.example.com:443"
