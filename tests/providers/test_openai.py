"""The OpenAI adapter sends the canonical format nearly as is and checks the replies' shape."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import ChatRequest, EmbeddingRequest, Message
from polymodal.domain.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    RateLimited,
    Timeout,
    Unavailable,
)
from polymodal.providers import http as upstream_http
from polymodal.providers import registry
from polymodal.providers.base import ProviderContext
from polymodal.providers.openai import OpenAIProvider
from polymodal.testing import FakeProvider, RefusedPort, Reply, ToolCall
from polymodal.testing.fakes.core import embed_base64, embed_vector
from tests.providers.support import (
    FAST,
    RELAXED,
    collect,
    make_deployment,
    streamed_text,
    streamed_tool_calls,
)

KEY = "sk-fake"
MODEL = "gpt-4o"
EMBEDDER = "text-embedding-3-small"
QUESTION = "what is the weather in Paris"
ECHO = "echo: " + QUESTION
ARGS = {"city": "Paris", "unit": "celsius"}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
USAGE = {
    "prompt_tokens": len(QUESTION.split()),
    "completion_tokens": len(ECHO.split()),
    "total_tokens": len(QUESTION.split()) + len(ECHO.split()),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("openai", api_key=KEY) as server:
        yield server


@dataclass
class Canned:
    """A loopback upstream answering every request with one scripted response: for the
    bodies the fake does not produce (error codes, base64 vectors, odd shapes)."""

    base_url: str = ""
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else orjson.dumps(body)
        self.headers = {"content-type": "application/json", **(headers or {})}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "body": await request.json()})
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@pytest.fixture(scope="module")
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def provider(context: ProviderContext) -> OpenAIProvider:
    created = registry.create("openai", context)
    assert isinstance(created, OpenAIProvider)
    return created


def gpt(upstream: FakeProvider | RefusedPort | Canned, **extra: Any) -> Deployment:
    return make_deployment(
        "openai", MODEL, upstream.base_url, {"chat"}, **{"api_key": KEY, **extra}
    )


def embedder(upstream: FakeProvider | RefusedPort | Canned, **extra: Any) -> Deployment:
    return make_deployment(
        "openai", EMBEDDER, upstream.base_url, {"embeddings"}, **{"api_key": KEY, **extra}
    )


def ask(text: str = QUESTION, **params: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=[{"role": "user", "content": text}], params=params)


def sent(fake: FakeProvider) -> dict[str, Any]:
    [request] = fake.requests
    body: dict[str, Any] = request["body"]
    return body


# --- request translation --------------------------------------------------------------------


async def test_request_goes_out_as_it_came_in_with_the_deployment_model(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    params = {
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "max_completion_tokens": 300,
        "seed": 7,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "user": "user-42",
    }
    request = ChatRequest(model="alias-the-client-used", messages=messages, params=params)
    await provider.complete(gpt(fake), request, RELAXED)

    [recorded] = fake.requests
    assert recorded["method"] == "POST"
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["headers"]["content-type"] == "application/json"
    assert "authorization" not in recorded["headers"]  # the fake drops credentials it checked
    assert recorded["body"] == {"model": MODEL, "messages": messages, **params}


async def test_stream_asks_for_usage_even_when_the_caller_did_not(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    await collect(provider.stream(gpt(fake), ask(temperature=0), RELAXED))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_base_url_trailing_slash_is_ignored(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    deployment = make_deployment("openai", MODEL, fake.base_url + "/", {"chat"}, api_key=KEY)
    await provider.complete(deployment, ask(), RELAXED)
    assert fake.requests[0]["path"] == "/v1/chat/completions"


# --- replies --------------------------------------------------------------------------------


async def test_complete_returns_the_chat_completion(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    result = await provider.complete(gpt(fake), ask(), RELAXED)
    assert result["object"] == "chat.completion"
    assert result["id"].startswith("chatcmpl-")
    assert result["model"] == MODEL
    [choice] = result["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == ECHO
    assert choice["finish_reason"] == "stop"
    usage = result["usage"]
    assert {k: usage[k] for k in USAGE} == USAGE


async def test_complete_returns_tool_calls(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.push_replies(Reply(tool_calls=(ToolCall("get_weather", ARGS, id="abc"),)))
    result = await provider.complete(gpt(fake), ask(tools=[WEATHER_TOOL]), RELAXED)
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "call_abc" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == ARGS


async def test_length_and_content_filter_finishes_pass_through(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    result = await provider.complete(gpt(fake), ask(max_tokens=2), RELAXED)
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["choices"][0]["message"]["content"] == "echo: what"
    fake.push_replies(Reply(finish="safety"))
    result = await provider.complete(gpt(fake), ask(), RELAXED)
    assert result["choices"][0]["finish_reason"] == "content_filter"


async def test_stream_yields_role_content_finish_and_usage_chunks(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    chunks = await collect(provider.stream(gpt(fake), ask(), RELAXED))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == ECHO
    assert len(chunks) == len(ECHO.split()) + 3  # role, one per word, finish, usage
    *_, finish, totals = chunks
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["delta"] == {}
    assert totals["choices"] == []
    usage = totals["usage"]
    assert usage is not None and {k: usage[k] for k in USAGE} == USAGE


async def test_stream_tool_calls_arrive_as_indexed_deltas(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    fake.push_replies(
        Reply(tool_calls=(ToolCall("get_weather", ARGS), ToolCall("get_time", {"tz": "CET"})))
    )
    chunks = await collect(provider.stream(gpt(fake), ask(tools=[WEATHER_TOOL]), RELAXED))
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert [d["index"] for d in deltas if "id" in d] == [0, 1]
    assert len(deltas) > 4  # the arguments arrive in pieces
    first, second = streamed_tool_calls(chunks)
    assert first["name"] == "get_weather" and json.loads(first["arguments"]) == ARGS
    assert second["name"] == "get_time" and json.loads(second["arguments"]) == {"tz": "CET"}
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    totals = chunks[-1].get("usage")
    assert totals is not None and totals["completion_tokens"] > 0


async def test_stream_reads_an_event_longer_than_aiohttps_default_line_limit(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    word = "x" * 700_000  # one word is one chunk: a ~700 KB SSE line (aiohttp's default: 512 KiB)
    fake.push_replies(Reply(text=word))
    chunks = await collect(provider.stream(gpt(fake), ask(), RELAXED))
    assert streamed_text(chunks) == word


async def test_stream_line_over_the_limit_is_unavailable(
    fake: FakeProvider, provider: OpenAIProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_http, "MAX_LINE_BYTES", 1000)
    fake.push_replies(Reply(text="y" * 5000))
    with pytest.raises(Unavailable):
        await collect(provider.stream(gpt(fake), ask(), RELAXED))


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "error", "code"),
    [
        ({"status": 400}, BadRequest, "upstream_bad_request"),
        (
            {"status": 400, "error_type": "content_policy_violation"},
            ContentFiltered,
            "content_filtered",
        ),
        ({"status": 401}, AuthFailed, "upstream_auth_failed"),
        ({"status": 403}, AuthFailed, "upstream_auth_failed"),
        ({"status": 404}, BadRequest, "upstream_bad_request"),
        ({"status": 408}, Timeout, "upstream_timeout"),
        ({"status": 422}, BadRequest, "upstream_bad_request"),
        ({"status": 429}, RateLimited, "upstream_rate_limited"),
        ({"status": 500}, Unavailable, "upstream_unavailable"),
        ({"status": 503}, Unavailable, "upstream_unavailable"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_statuses_map_onto_the_domain_errors(
    fake: FakeProvider,
    provider: OpenAIProvider,
    faults: dict[str, Any],
    error: type[ProviderError],
    code: str,
    streaming: bool,
) -> None:
    fake.set_faults(**faults, error_message="upstream says no")
    with pytest.raises(error) as caught:
        if streaming:
            await collect(provider.stream(gpt(fake), ask(), RELAXED))
        else:
            await provider.complete(gpt(fake), ask(), RELAXED)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.provider == "openai"
    assert caught.value.upstream_status == faults["status"]
    assert "upstream says no" in caught.value.message


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (
            400,
            {
                "error": {
                    "message": "maximum context length is 128000 tokens",
                    "code": "context_length_exceeded",
                }
            },
            ContextTooLong,
            "maximum context length",
        ),
        (
            400,
            {"error": {"message": "too long", "code": "string_above_max_length"}},
            ContextTooLong,
            "too long",
        ),
        (
            400,
            {"error": {"message": "filtered", "code": "content_filter", "type": None}},
            ContentFiltered,
            "filtered",
        ),
        # A context-length code on another status is not a context-length error.
        (
            500,
            {"error": {"message": "odd", "code": "context_length_exceeded"}},
            Unavailable,
            "odd",
        ),
        (400, {"error": "a plain string error"}, BadRequest, "a plain string error"),
        (401, {"error": {}}, AuthFailed, "no error message"),
        (502, b"<html>Bad Gateway</html>", Unavailable, "<html>Bad Gateway</html>"),
        (404, b"[1, 2]", BadRequest, "[1, 2]"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_bodies_map_onto_the_domain_errors(
    canned: Canned,
    provider: OpenAIProvider,
    status: int,
    body: Any,
    error: type[ProviderError],
    message: str,
    streaming: bool,
) -> None:
    canned.reply(status, body)
    with pytest.raises(error) as caught:
        if streaming:
            await collect(provider.stream(gpt(canned), ask(), RELAXED))
        else:
            await provider.complete(gpt(canned), ask(), RELAXED)
    assert type(caught.value) is error
    assert caught.value.upstream_status == status
    assert message in caught.value.message


async def test_rate_limit_carries_retry_after(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(status=429, retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await provider.complete(gpt(fake), ask(), RELAXED)
    assert caught.value.retry_after == 7.0
    assert "Rate limit reached" in caught.value.message
    with pytest.raises(RateLimited) as caught:
        await collect(provider.stream(gpt(fake), ask(), RELAXED))
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # OpenAI's own, preferred
        ({"Retry-After": "3"}, 3.0),  # any case
        ({"RETRY-AFTER-MS": "250"}, 0.25),
        ({"retry-after": "soon"}, None),  # neither seconds nor a date
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after": "-5"}, 0.0),
        ({}, None),
    ],
)
async def test_retry_after_headers_are_read_case_insensitively(
    canned: Canned, provider: OpenAIProvider, headers: dict[str, str], seconds: float | None
) -> None:
    canned.reply(429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, headers)
    with pytest.raises(RateLimited) as caught:
        await provider.complete(gpt(canned), ask(), RELAXED)
    assert caught.value.retry_after == seconds


async def test_retry_after_as_an_http_date(canned: Canned, provider: OpenAIProvider) -> None:
    canned.reply(
        429, {"error": {"message": "later"}}, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    with pytest.raises(RateLimited) as caught:
        await provider.complete(gpt(canned), ask(), RELAXED)
    assert caught.value.retry_after == 0.0  # in the past


async def test_wrong_key_is_auth_failed(fake: FakeProvider, provider: OpenAIProvider) -> None:
    with pytest.raises(AuthFailed) as caught:
        await provider.complete(gpt(fake, api_key="sk-wrong"), ask(), RELAXED)
    assert "Incorrect API key" in caught.value.message
    with pytest.raises(AuthFailed):
        await provider.complete(gpt(fake, api_key=None), ask(), RELAXED)


async def test_error_event_mid_stream_is_unavailable(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    fake.set_faults(error_after_chunks=3, error_message="engine fell over")
    received = []
    with pytest.raises(Unavailable) as caught:
        async for chunk in provider.stream(gpt(fake), ask(), RELAXED):
            received.append(chunk)
    assert caught.value.upstream_status == 502
    assert "engine fell over" in caught.value.message
    assert len(received) == 3 and all(c["choices"][0]["finish_reason"] is None for c in received)


async def test_malformed_body_is_unavailable(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(malformed="json")
    with pytest.raises(Unavailable) as caught:
        await provider.complete(gpt(fake), ask(), RELAXED)
    assert caught.value.code == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"id": "x"},
        {"choices": "none"},
        {"choices": [{"index": 0}]},
        {"choices": [{"index": 0, "message": "hi"}]},
    ],
)
async def test_completion_of_the_wrong_shape_is_malformed(
    canned: Canned, provider: OpenAIProvider, body: Any
) -> None:
    canned.reply(200, body)
    with pytest.raises(Unavailable) as caught:
        await provider.complete(gpt(canned), ask(), RELAXED)
    assert caught.value.code == "malformed"


async def test_malformed_chunk_is_unavailable(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(malformed="chunk", malformed_after_chunks=3)
    received = []
    with pytest.raises(Unavailable) as caught:
        async for chunk in provider.stream(gpt(fake), ask(), RELAXED):
            received.append(chunk)
    assert caught.value.code == "malformed"
    assert len(received) == 3


@pytest.mark.parametrize(
    "event", [b"[1, 2]", b'{"id": "x", "object": "chat.completion.chunk"}', b'"text"']
)
async def test_chunk_of_the_wrong_shape_is_malformed(
    canned: Canned, provider: OpenAIProvider, event: bytes
) -> None:
    canned.reply(
        200, b"data: " + event + b"\n\ndata: [DONE]\n\n", {"content-type": "text/event-stream"}
    )
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(gpt(canned), ask(), RELAXED))
    assert caught.value.code == "malformed"


async def test_stream_without_done_is_truncated(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    fake.set_faults(truncate_after_chunks=4, truncate_mode="clean")
    received = []
    with pytest.raises(Unavailable) as caught:
        async for chunk in provider.stream(gpt(fake), ask(), RELAXED):
            received.append(chunk)
    assert caught.value.code == "truncated"
    assert len(received) == 4


async def test_dropped_connection_mid_stream_is_truncated(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    fake.set_faults(truncate_after_chunks=4, truncate_mode="abort")
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(gpt(fake), ask(), RELAXED))
    assert caught.value.code == "truncated"


async def test_stalled_stream_times_out(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(stall_after_chunks=3)
    received = []
    with pytest.raises(Timeout, match="next chunk") as caught:
        async for chunk in provider.stream(gpt(fake), ask(), FAST):
            received.append(chunk)
    assert caught.value.provider == "openai"
    assert len(received) == 3


async def test_late_first_chunk_times_out(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(first_byte_delay_ms=800)
    with pytest.raises(Timeout, match="first chunk"):
        await collect(provider.stream(gpt(fake), ask(), FAST))


@pytest.mark.parametrize("streaming", [False, True])
async def test_hung_request_times_out(
    fake: FakeProvider, provider: OpenAIProvider, streaming: bool
) -> None:
    fake.set_faults(hang=True)
    with pytest.raises(Timeout):
        if streaming:
            await collect(provider.stream(gpt(fake), ask(), FAST))
        else:
            await provider.complete(gpt(fake), ask(), FAST)


async def test_refused_connection_is_unavailable(provider: OpenAIProvider) -> None:
    with RefusedPort("openai") as port:
        with pytest.raises(Unavailable) as caught:
            await provider.complete(gpt(port), ask(), FAST)
        assert caught.value.code == "upstream_unavailable"
        with pytest.raises(Unavailable):
            await collect(provider.stream(gpt(port), ask(), FAST))
        with pytest.raises(Unavailable):
            await provider.embed(embedder(port), EmbeddingRequest(EMBEDDER, ["x"]), FAST)


async def test_after_errors_the_pool_still_serves(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    for faults in (
        {"stall_after_chunks": 2},
        {"truncate_after_chunks": 2},
        {"malformed": "chunk"},
        {"hang": True},
    ):
        fake.set_faults(**faults, times=1)
        with pytest.raises(ProviderError):
            await collect(provider.stream(gpt(fake), ask(), FAST))
    chunks = await collect(provider.stream(gpt(fake), ask(), RELAXED))
    assert streamed_text(chunks) == ECHO


# --- embeddings -----------------------------------------------------------------------------


async def test_embed_sends_model_inputs_float_format_and_dimensions(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    texts = ["the quick brown fox", "jumps"]
    request = EmbeddingRequest(EMBEDDER, texts, dimensions=64)
    result = await provider.embed(embedder(fake), request, RELAXED)
    [recorded] = fake.requests
    assert recorded["path"] == "/v1/embeddings"
    assert recorded["body"] == {
        "model": EMBEDDER,
        "input": texts,
        "encoding_format": "float",
        "dimensions": 64,
    }
    assert result.vectors == [list(embed_vector(t, 64)) for t in texts]
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in result.vectors)
    assert result.prompt_tokens == 5
    assert result.model == EMBEDDER


async def test_embed_without_dimensions_uses_the_model_size(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    result = await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["x"]), RELAXED)
    assert "dimensions" not in sent(fake)
    assert [len(v) for v in result.vectors] == [1536]


async def test_embed_asks_for_floats_even_when_the_caller_wants_base64(
    fake: FakeProvider, provider: OpenAIProvider
) -> None:
    """The API layer encodes base64 for its own caller; upstream always sends floats."""
    request = EmbeddingRequest(EMBEDDER, ["x"], dimensions=8, encoding_format="base64")
    result = await provider.embed(embedder(fake), request, RELAXED)
    assert sent(fake)["encoding_format"] == "float"
    assert result.vectors == [list(embed_vector("x", 8))]


async def test_embed_decodes_base64_vectors_and_orders_by_index(
    canned: Canned, provider: OpenAIProvider
) -> None:
    """Some OpenAI-compatible servers answer base64 whatever was asked; order by index."""
    first, second = embed_vector("a", 32), embed_vector("b", 32)
    canned.reply(
        200,
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": list(second)},
                {"object": "embedding", "index": 0, "embedding": embed_base64(first)},
            ],
            "model": EMBEDDER,
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        },
    )
    request = EmbeddingRequest(EMBEDDER, ["a", "b"], dimensions=32)
    result = await provider.embed(embedder(canned), request, RELAXED)
    assert canned.requests[-1]["path"] == "/v1/embeddings"
    assert canned.requests[-1]["body"]["dimensions"] == 32
    # The base64 one decodes to the exact float32 values the JSON one spells to 9 digits.
    assert result.vectors == [pytest.approx(list(first), rel=1e-7), list(second)]
    assert result.prompt_tokens == 2


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"index": 0, "embedding": [0.1]}]},  # one vector for two inputs
        {"data": [{"index": 0}, {"index": 1}]},
        {"data": "none"},
        {"object": "list"},
        {
            "data": [{"index": 0, "embedding": [0.1]}, {"index": 1, "embedding": [0.2]}],
            "usage": {"prompt_tokens": "many"},
        },
    ],
)
async def test_embeddings_of_the_wrong_shape_are_malformed(
    canned: Canned, provider: OpenAIProvider, body: Any
) -> None:
    canned.reply(200, body)
    with pytest.raises(Unavailable) as caught:
        await provider.embed(embedder(canned), EmbeddingRequest(EMBEDDER, ["a", "b"]), RELAXED)
    assert caught.value.code == "malformed"


async def test_embedding_errors(fake: FakeProvider, provider: OpenAIProvider) -> None:
    fake.set_faults(status=429, retry_after=2, times=1)
    with pytest.raises(RateLimited) as caught:
        await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["a"]), RELAXED)
    assert caught.value.retry_after == 2.0
    fake.set_faults(malformed="json", times=1)
    with pytest.raises(Unavailable) as caught:
        await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["a"]), RELAXED)
    assert caught.value.code == "malformed"
    with pytest.raises(BadRequest, match="does not support specifying dimensions"):
        await provider.embed(
            make_deployment(
                "openai", "text-embedding-ada-002", fake.base_url, {"embeddings"}, api_key=KEY
            ),
            EmbeddingRequest("text-embedding-ada-002", ["a"], dimensions=8),
            RELAXED,
        )
    fake.set_faults(hang=True, times=1)
    with pytest.raises(Timeout):
        await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["a"]), FAST)
