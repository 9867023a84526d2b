"""The Cohere adapter embeds through /v1/embed (v3 models) and refuses chat."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import ChatRequest, EmbeddingRequest
from polymodal.domain.errors import (
    AuthFailed,
    BadRequest,
    ProviderError,
    RateLimited,
    Timeout,
    Unavailable,
)
from polymodal.providers import registry
from polymodal.providers.base import ProviderContext
from polymodal.providers.cohere import CohereProvider
from polymodal.testing import FakeProvider, RefusedPort
from tests.providers.support import FAST, RELAXED, collect, make_deployment

KEY = "co-fake"
MODEL = "embed-english-v3.0"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("cohere", api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def provider(context: ProviderContext) -> CohereProvider:
    created = registry.create("cohere", context)
    assert isinstance(created, CohereProvider)
    return created


def cohere(fake: FakeProvider | RefusedPort, **extra: Any) -> Deployment:
    options: dict[str, Any] = {"api_key": KEY, "dimensions": 1024, **extra}
    return make_deployment("cohere", MODEL, fake.base_url, {"embeddings"}, **options)


async def test_embed_sends_texts_model_input_type_and_float_type(
    fake: FakeProvider, provider: CohereProvider
) -> None:
    texts = ["the quick brown fox", "jumps"]
    result = await provider.embed(cohere(fake), EmbeddingRequest(MODEL, texts), RELAXED)
    [recorded] = fake.requests
    assert recorded["path"] == "/v1/embed"
    assert recorded["body"] == {
        "model": MODEL,
        "texts": texts,
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    assert len(result.vectors) == 2 and {len(v) for v in result.vectors} == {1024}
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in result.vectors)
    assert result.prompt_tokens == 5  # billed_units.input_tokens
    assert result.model == MODEL


async def test_queries_are_embedded_as_search_queries(
    fake: FakeProvider, provider: CohereProvider
) -> None:
    request = EmbeddingRequest(MODEL, ["where is the fox"], input_type="query")
    await provider.embed(cohere(fake), request, RELAXED)
    assert fake.requests[0]["body"]["input_type"] == "search_query"


async def test_more_than_96_texts_go_in_several_calls_in_order(
    fake: FakeProvider, provider: CohereProvider
) -> None:
    texts = [f"text number {i}" for i in range(200)]
    result = await provider.embed(cohere(fake), EmbeddingRequest(MODEL, texts), RELAXED)
    assert [len(r["body"]["texts"]) for r in fake.requests] == [96, 96, 8]
    assert len(result.vectors) == 200
    assert result.prompt_tokens == 3 * 200
    single = await provider.embed(
        cohere(fake), EmbeddingRequest(MODEL, ["text number 150"]), RELAXED
    )
    assert single.vectors[0] == result.vectors[150]


async def test_other_dimensions_are_refused(fake: FakeProvider, provider: CohereProvider) -> None:
    await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"], dimensions=1024), RELAXED)
    with pytest.raises(BadRequest, match="dimensions"):
        await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"], dimensions=256), RELAXED)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, AuthFailed),
        (404, BadRequest),
        (429, RateLimited),
        (500, Unavailable),
        (503, Unavailable),
    ],
)
async def test_error_statuses_map_onto_the_domain_errors(
    fake: FakeProvider, provider: CohereProvider, status: int, error: type[ProviderError]
) -> None:
    fake.set_faults(status=status, error_message="upstream says no")
    with pytest.raises(error) as caught:
        await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"]), RELAXED)
    assert type(caught.value) is error
    assert caught.value.upstream_status == status
    assert "upstream says no" in caught.value.message


async def test_rate_limit_carries_retry_after(fake: FakeProvider, provider: CohereProvider) -> None:
    fake.set_faults(status=429, retry_after=12)
    with pytest.raises(RateLimited) as caught:
        await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"]), RELAXED)
    assert caught.value.retry_after == 12.0


async def test_wrong_key_is_auth_failed(fake: FakeProvider, provider: CohereProvider) -> None:
    with pytest.raises(AuthFailed):
        await provider.embed(
            cohere(fake, api_key="co-wrong"), EmbeddingRequest(MODEL, ["x"]), RELAXED
        )


async def test_malformed_body_is_unavailable(fake: FakeProvider, provider: CohereProvider) -> None:
    fake.set_faults(malformed="json")
    with pytest.raises(Unavailable) as caught:
        await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"]), RELAXED)
    assert caught.value.code == "malformed"


async def test_hung_request_times_out(fake: FakeProvider, provider: CohereProvider) -> None:
    fake.set_faults(hang=True)
    with pytest.raises(Timeout):
        await provider.embed(cohere(fake), EmbeddingRequest(MODEL, ["x"]), FAST)


async def test_refused_connection_is_unavailable(provider: CohereProvider) -> None:
    with RefusedPort("cohere") as port, pytest.raises(Unavailable):
        await provider.embed(cohere(port), EmbeddingRequest(MODEL, ["x"]), FAST)


async def test_chat_is_refused(fake: FakeProvider, provider: CohereProvider) -> None:
    request = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(BadRequest, match="cohere deployments serve embeddings only"):
        await provider.complete(cohere(fake), request, RELAXED)
    with pytest.raises(BadRequest, match="cohere deployments serve embeddings only"):
        await collect(provider.stream(cohere(fake), request, RELAXED))
    assert fake.requests == []
