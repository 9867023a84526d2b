"""The Gemini adapter speaks generateContent / embedContent and answers in the OpenAI format."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

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
from polymodal.providers import gemini_translate, registry
from polymodal.providers.base import ProviderContext
from polymodal.providers.gemini import GeminiProvider
from polymodal.testing import FakeProvider, RefusedPort, Reply, ToolCall
from tests.providers.support import (
    FAST,
    RELAXED,
    collect,
    make_deployment,
    streamed_text,
    streamed_tool_calls,
)

KEY = "AIza-fake"
MODEL = "gemini-2.5-flash"
EMBEDDER = "text-embedding-004"
QUESTION = "what is the weather in Paris"
ECHO = "echo: " + QUESTION
ARGS = {"city": "Paris", "unit": "celsius"}
PIXEL = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
WEATHER_DECLARATION = {
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "City"},
            "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("gemini", api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def provider(context: ProviderContext) -> GeminiProvider:
    created = registry.create("gemini", context)
    assert isinstance(created, GeminiProvider)
    return created


def gemini(fake: FakeProvider | RefusedPort, **extra: Any) -> Deployment:
    return make_deployment("gemini", MODEL, fake.base_url, {"chat"}, **{"api_key": KEY, **extra})


def embedder(fake: FakeProvider) -> Deployment:
    return make_deployment("gemini", EMBEDDER, fake.base_url, {"embeddings"}, api_key=KEY)


def ask(text: str = QUESTION, **params: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=[{"role": "user", "content": text}], params=params)


def sent(fake: FakeProvider) -> dict[str, Any]:
    [request] = fake.requests
    body: dict[str, Any] = request["body"]
    return body


# --- request translation --------------------------------------------------------------------


async def test_request_translates_contents_tools_and_generation_config(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    params = {
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 200,
        "stop": ["END", "STOP"],
        "seed": 11,
        "n": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "user": "user-42",
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    await provider.complete(gemini(fake), ChatRequest(MODEL, messages, params=params), RELAXED)

    [recorded] = fake.requests
    assert recorded["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert recorded["headers"]["content-type"] == "application/json"
    assert recorded["body"] == {
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse metric units."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Look:"},
                    {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                    {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
                    {"text": "And tomorrow?"},
                ],
            },
        ],
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.8,
            "seed": 11,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
            "maxOutputTokens": 200,
            "stopSequences": ["END", "STOP"],
            "candidateCount": 2,
        },
        "tools": [{"functionDeclarations": [WEATHER_DECLARATION, {"name": "get_time"}]}],
        "toolConfig": {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
        },
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")]
)
async def test_tool_choice_modes(
    fake: FakeProvider, provider: GeminiProvider, choice: str, mode: str
) -> None:
    await provider.complete(gemini(fake), ask(tools=[WEATHER_TOOL], tool_choice=choice), RELAXED)
    assert sent(fake)["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


async def test_json_object_sets_the_response_mime_type(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    await provider.complete(gemini(fake), ask(response_format={"type": "json_object"}), RELAXED)
    assert sent(fake)["generationConfig"] == {"responseMimeType": "application/json"}


async def test_json_schema_becomes_a_response_schema(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "format": "email"},
            "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"const": "x"}},
        },
        "required": ["name", "pet", "tags"],
        "additionalProperties": False,
        "$defs": {"Pet": {"type": "object", "properties": {"age": {"type": "integer"}}}},
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    await provider.complete(gemini(fake), ask(response_format=response_format), RELAXED)
    assert sent(fake)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {
                "name": {"type": "STRING"},
                "pet": {
                    "nullable": True,
                    "type": "OBJECT",
                    "properties": {"age": {"type": "INTEGER"}},
                },
                "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x"]}},
            },
            "required": ["name", "pet", "tags"],
        },
    }


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 1}}, "logit_bias"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "map",
                        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                }
            },
            "response_format.json_schema.schema.additionalProperties",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"not": {}}}},
                        },
                    }
                ]
            },
            "tools[0].function.parameters.properties.x.not",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "tree",
                            "parameters": {
                                "$ref": "#/$defs/Node",
                                "$defs": {
                                    "Node": {
                                        "type": "object",
                                        "properties": {"kids": {"$ref": "#/$defs/Node"}},
                                    }
                                },
                            },
                        },
                    }
                ]
            },
            "recursive",
        ),
    ],
)
async def test_parameters_without_a_faithful_translation_are_refused_before_sending(
    fake: FakeProvider, provider: GeminiProvider, params: dict[str, Any], named: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        await provider.complete(gemini(fake), ask(**params), RELAXED)
    assert named in caught.value.message
    assert fake.requests == []


async def test_image_urls_and_unknown_tool_results_are_refused(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    remote: list[Message] = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}]}
    ]
    with pytest.raises(BadRequest, match=r"messages\[0\]\.content\[0\]\.image_url\.url"):
        await provider.complete(gemini(fake), ChatRequest(MODEL, remote), RELAXED)
    orphan: list[Message] = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_zzz", "content": "42"},
    ]
    with pytest.raises(BadRequest, match=r"messages\[1\]\.tool_call_id"):
        await provider.complete(gemini(fake), ChatRequest(MODEL, orphan), RELAXED)
    assert fake.requests == []


# --- replies --------------------------------------------------------------------------------


async def test_complete_returns_an_openai_chat_completion(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    result = await provider.complete(gemini(fake), ask(), RELAXED)
    assert result["object"] == "chat.completion"
    assert result["id"].startswith("fake") and result["model"] == MODEL
    assert result["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ECHO},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert result["usage"] == {
        "prompt_tokens": len(QUESTION.split()),
        "completion_tokens": len(ECHO.split()),
        "total_tokens": len(QUESTION.split()) + len(ECHO.split()),
    }


async def test_function_calls_become_tool_calls_with_stable_ids(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.push_replies(Reply(tool_calls=(ToolCall("get_weather", ARGS), ToolCall("get_time"))))
    result = await provider.complete(gemini(fake), ask(tools=[WEATHER_TOOL]), RELAXED)
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["function"]["name"] == "get_weather"
    assert json.loads(first["function"]["arguments"]) == ARGS
    assert second["function"] == {"name": "get_time", "arguments": "{}"}
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    # The same response read again yields the same ids.
    body = {
        "responseId": result["id"],
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": ARGS}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
    }
    again = gemini_translate.completion(body, model=MODEL, single_tool_call=False)
    assert again["choices"][0]["message"]["tool_calls"] == [first, second]


async def test_parallel_tool_calls_false_keeps_the_first_call(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    calls = (ToolCall("get_weather", ARGS), ToolCall("get_time"))
    fake.push_replies(Reply(tool_calls=calls), Reply(tool_calls=calls))
    request = ask(tools=[WEATHER_TOOL], parallel_tool_calls=False)
    result = await provider.complete(gemini(fake), request, RELAXED)
    assert [c["function"]["name"] for c in result["choices"][0]["message"]["tool_calls"]] == [
        "get_weather"
    ]
    chunks = await collect(provider.stream(gemini(fake), request, RELAXED))
    assert [c["name"] for c in streamed_tool_calls(chunks)] == ["get_weather"]


async def test_max_tokens_finish_is_length(fake: FakeProvider, provider: GeminiProvider) -> None:
    result = await provider.complete(gemini(fake), ask(max_completion_tokens=2), RELAXED)
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["choices"][0]["message"]["content"] == "echo: what"


async def test_stream_yields_role_content_finish_and_usage_chunks(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    chunks = await collect(provider.stream(gemini(fake), ask(), RELAXED))
    [recorded] = fake.requests
    assert recorded["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert recorded["query"] == {"alt": "sse"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "echo:"}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:-1])
    assert streamed_text(chunks) == ECHO
    *_, finish, totals = chunks
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert totals["choices"] == [] and totals["usage"] == {
        "prompt_tokens": len(QUESTION.split()),
        "completion_tokens": len(ECHO.split()),
        "total_tokens": len(QUESTION.split()) + len(ECHO.split()),
    }


async def test_stream_tool_calls(fake: FakeProvider, provider: GeminiProvider) -> None:
    fake.push_replies(Reply(text="Checking.", tool_calls=(ToolCall("get_weather", ARGS),)))
    chunks = await collect(provider.stream(gemini(fake), ask(tools=[WEATHER_TOOL]), RELAXED))
    assert streamed_text(chunks) == "Checking."
    [call] = streamed_tool_calls(chunks)
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == ARGS
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("finish", ["safety", "blocked"])
@pytest.mark.parametrize("streaming", [False, True])
async def test_safety_blocks_are_content_filtered(
    fake: FakeProvider, provider: GeminiProvider, finish: str, streaming: bool
) -> None:
    fake.push_replies(Reply(finish=finish))  # type: ignore[arg-type]
    with pytest.raises(ContentFiltered) as caught:
        if streaming:
            await collect(provider.stream(gemini(fake), ask(), RELAXED))
        else:
            await provider.complete(gemini(fake), ask(), RELAXED)
    assert not caught.value.retryable
    assert "SAFETY" in caught.value.message


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        ({"status": 400}, BadRequest),
        (
            {
                "status": 400,
                "error_message": "The input token count (1200000) exceeds the maximum number "
                "of tokens allowed (1048576).",
            },
            ContextTooLong,
        ),
        ({"status": 401}, AuthFailed),
        ({"status": 403}, AuthFailed),
        ({"status": 404}, BadRequest),
        ({"status": 429}, RateLimited),
        ({"status": 500}, Unavailable),
        ({"status": 503}, Unavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_statuses_map_onto_the_domain_errors(
    fake: FakeProvider,
    provider: GeminiProvider,
    faults: dict[str, Any],
    error: type[ProviderError],
    streaming: bool,
) -> None:
    fake.set_faults(**faults)
    with pytest.raises(error) as caught:
        if streaming:
            await collect(provider.stream(gemini(fake), ask(), RELAXED))
        else:
            await provider.complete(gemini(fake), ask(), RELAXED)
    assert type(caught.value) is error
    assert caught.value.upstream_status == faults["status"]


async def test_rate_limit_retry_delay_comes_from_retry_info_or_the_header(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.set_faults(status=429, times=1)  # RetryInfo "1s", no Retry-After header
    with pytest.raises(RateLimited) as caught:
        await provider.complete(gemini(fake), ask(), RELAXED)
    assert caught.value.retry_after == 1.0
    fake.set_faults(status=429, retry_after=4.5, times=1)
    with pytest.raises(RateLimited) as caught:
        await provider.complete(gemini(fake), ask(), RELAXED)
    assert caught.value.retry_after == 4.5


async def test_invalid_key_is_auth_failed(fake: FakeProvider, provider: GeminiProvider) -> None:
    with pytest.raises(AuthFailed) as caught:  # Gemini says 400 INVALID_ARGUMENT
        await provider.complete(gemini(fake, api_key="AIza-wrong"), ask(), RELAXED)
    assert caught.value.upstream_status == 400


async def test_error_event_mid_stream_is_unavailable(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.set_faults(error_after_chunks=2)
    received = []
    with pytest.raises(Unavailable) as caught:
        async for chunk in provider.stream(gemini(fake), ask(), RELAXED):
            received.append(chunk)
    assert caught.value.upstream_status == 503
    assert len(received) == 2 and all(c["choices"][0]["finish_reason"] is None for c in received)


async def test_malformed_body_and_chunk_are_unavailable(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.set_faults(malformed="json", times=1)
    with pytest.raises(Unavailable) as caught:
        await provider.complete(gemini(fake), ask(), RELAXED)
    assert caught.value.code == "malformed"
    fake.set_faults(malformed="chunk", malformed_after_chunks=2, times=1)
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(gemini(fake), ask(), RELAXED))
    assert caught.value.code == "malformed"


async def test_stream_that_ends_before_a_finish_reason_is_truncated(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.set_faults(truncate_after_chunks=3, truncate_mode="clean")
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(gemini(fake), ask(), RELAXED))
    assert caught.value.code == "truncated"


async def test_dropped_connection_mid_stream_is_truncated(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    fake.set_faults(truncate_after_chunks=3, truncate_mode="abort")
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(gemini(fake), ask(), RELAXED))
    assert caught.value.code == "truncated"  # aiohttp: ClientPayloadError mid-body


async def test_stalled_stream_times_out(fake: FakeProvider, provider: GeminiProvider) -> None:
    fake.set_faults(stall_after_chunks=2)
    with pytest.raises(Timeout, match="next chunk"):
        await collect(provider.stream(gemini(fake), ask(), FAST))


async def test_hung_request_times_out(fake: FakeProvider, provider: GeminiProvider) -> None:
    fake.set_faults(hang=True)
    with pytest.raises(Timeout):
        await provider.complete(gemini(fake), ask(), FAST)


async def test_refused_connection_is_unavailable(provider: GeminiProvider) -> None:
    with RefusedPort("gemini") as port:
        with pytest.raises(Unavailable):
            await provider.complete(gemini(port), ask(), FAST)
        with pytest.raises(Unavailable):
            await collect(provider.stream(gemini(port), ask(), FAST))


# --- embeddings -----------------------------------------------------------------------------


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


async def test_one_text_uses_embed_content_with_task_type_and_dimensions(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    request = EmbeddingRequest(EMBEDDER, ["hello world"], dimensions=16, input_type="query")
    result = await provider.embed(embedder(fake), request, RELAXED)
    [recorded] = fake.requests
    assert recorded["path"] == f"/v1beta/models/{EMBEDDER}:embedContent"
    assert recorded["body"] == {
        "model": f"models/{EMBEDDER}",
        "content": {"parts": [{"text": "hello world"}]},
        "taskType": "RETRIEVAL_QUERY",
        "outputDimensionality": 16,
    }
    [vector] = result.vectors
    assert len(vector) == 16 and math.isclose(_norm(vector), 1.0, rel_tol=1e-5)
    assert result.model == EMBEDDER


async def test_many_texts_use_batch_embed_contents_in_batches_of_100(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    texts = [f"document {i}" for i in range(150)]
    result = await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, texts), RELAXED)
    first, second = fake.requests
    assert first["path"] == f"/v1beta/models/{EMBEDDER}:batchEmbedContents"
    assert [len(r["body"]["requests"]) for r in (first, second)] == [100, 50]
    assert first["body"]["requests"][0] == {
        "model": f"models/{EMBEDDER}",
        "content": {"parts": [{"text": "document 0"}]},
        "taskType": "RETRIEVAL_DOCUMENT",
    }
    assert len(result.vectors) == 150 and {len(v) for v in result.vectors} == {768}
    single = await provider.embed(
        embedder(fake), EmbeddingRequest(EMBEDDER, ["document 120"]), RELAXED
    )
    assert single.vectors[0] == result.vectors[120]  # order kept across batches


async def test_embedding_errors(fake: FakeProvider, provider: GeminiProvider) -> None:
    fake.set_faults(status=429, times=1)
    with pytest.raises(RateLimited):
        await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["a", "b"]), RELAXED)
    fake.set_faults(malformed="json", times=1)
    with pytest.raises(Unavailable) as caught:
        await provider.embed(embedder(fake), EmbeddingRequest(EMBEDDER, ["a"]), RELAXED)
    assert caught.value.code == "malformed"


async def test_chat_on_an_embedding_deployment_and_the_reverse_are_refused(
    fake: FakeProvider, provider: GeminiProvider
) -> None:
    with pytest.raises(BadRequest, match="embeddings only"):
        await provider.complete(embedder(fake), ask(), RELAXED)
    with pytest.raises(BadRequest, match="embeddings only"):
        await collect(provider.stream(embedder(fake), ask(), RELAXED))
    with pytest.raises(BadRequest, match="chat only"):
        await provider.embed(gemini(fake), EmbeddingRequest(MODEL, ["x"]), RELAXED)
    assert fake.requests == []
