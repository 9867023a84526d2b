"""The Anthropic adapter speaks the Messages API and answers in the OpenAI format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

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
from polymodal.providers import registry
from polymodal.providers.anthropic import AnthropicProvider
from polymodal.providers.base import ProviderContext
from polymodal.testing import FakeProvider, RefusedPort, Reply, ToolCall
from tests.providers.support import (
    FAST,
    RELAXED,
    collect,
    make_deployment,
    streamed_text,
    streamed_tool_calls,
)

KEY = "sk-ant-fake"
MODEL = "claude-sonnet-4-5-20250929"
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
PIXEL = "iVBORw0KGgo="


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("anthropic", api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def provider(context: ProviderContext) -> AnthropicProvider:
    created = registry.create("anthropic", context)
    assert isinstance(created, AnthropicProvider)
    return created


def claude(fake: FakeProvider | RefusedPort, **extra: Any) -> Any:
    return make_deployment("anthropic", MODEL, fake.base_url, {"chat"}, **{"api_key": KEY, **extra})


def ask(text: str = QUESTION, **params: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=[{"role": "user", "content": text}], params=params)


def sent(fake: FakeProvider) -> dict[str, Any]:
    [request] = fake.requests
    body: dict[str, Any] = request["body"]
    return body


# --- request translation --------------------------------------------------------------------


async def test_request_translates_messages_tools_and_parameters(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "Hello"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24 C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ]
    request = ChatRequest(
        model=MODEL,
        messages=messages,
        params={
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "max_completion_tokens": 300,
            "user": "user-42",
            "seed": 7,
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "presence_penalty": 0,
        },
    )
    await provider.complete(claude(fake), request, RELAXED)

    [recorded] = fake.requests
    assert recorded["path"] == "/v1/messages"
    assert recorded["headers"]["anthropic-version"] == "2023-06-01"
    assert recorded["headers"]["content-type"] == "application/json"
    assert recorded["body"] == {
        "model": MODEL,
        "max_tokens": 300,
        "system": "Be brief.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_1",
                        "content": [{"type": "text", "text": "18 C"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "24 C"}],
                    },
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
async def test_tool_choice_mapping(
    fake: FakeProvider, provider: AnthropicProvider, choice: Any, expected: dict[str, Any]
) -> None:
    await provider.complete(claude(fake), ask(tools=[WEATHER_TOOL], tool_choice=choice), RELAXED)
    assert sent(fake)["tool_choice"] == expected


async def test_tool_without_parameters_gets_an_empty_object_schema(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    await provider.complete(claude(fake), ask(tools=[tool]), RELAXED)
    assert sent(fake)["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert sent(fake)["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("params", "deployment_max", "expected"),
    [({"max_tokens": 64}, 1000, 64), ({}, 1000, 1000), ({}, None, 4096)],
)
async def test_max_tokens_comes_from_the_request_then_the_deployment_then_a_default(
    fake: FakeProvider,
    provider: AnthropicProvider,
    params: dict[str, Any],
    deployment_max: int | None,
    expected: int,
) -> None:
    deployment = claude(fake, max_output_tokens=deployment_max)
    await provider.complete(deployment, ask(**params), RELAXED)
    assert sent(fake)["max_tokens"] == expected


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 1.5}, "temperature"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "xs", "schema": {"type": "array"}},
                }
            },
            "response_format",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ],
)
async def test_parameters_without_a_faithful_translation_are_refused_before_sending(
    fake: FakeProvider, provider: AnthropicProvider, params: dict[str, Any], named: str
) -> None:
    with pytest.raises(BadRequest, match=named.replace("[", r"\[")) as caught:
        await provider.complete(claude(fake), ask(**params), RELAXED)
    assert not caught.value.retryable
    assert fake.requests == []


async def test_malformed_tool_arguments_and_image_urls_are_refused(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    bad_args: list[Message] = [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ],
        }
    ]
    with pytest.raises(BadRequest, match=r"messages\[0\]\.tool_calls\[0\]\.function\.arguments"):
        await provider.complete(claude(fake), ChatRequest(model=MODEL, messages=bad_args), RELAXED)
    bad_image: list[Message] = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}
    ]
    with pytest.raises(BadRequest, match=r"messages\[0\]\.content\[0\]\.image_url\.url"):
        await provider.complete(claude(fake), ChatRequest(model=MODEL, messages=bad_image), RELAXED)
    assert fake.requests == []


# --- replies --------------------------------------------------------------------------------


async def test_complete_returns_an_openai_chat_completion(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    result = await provider.complete(claude(fake), ask(), RELAXED)
    assert result["object"] == "chat.completion"
    assert result["id"].startswith("msg_")
    assert result["model"] == MODEL
    [choice] = result["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": ECHO}
    assert choice["finish_reason"] == "stop"
    assert result["usage"] == {
        "prompt_tokens": len(QUESTION.split()),
        "completion_tokens": len(ECHO.split()),
        "total_tokens": len(QUESTION.split()) + len(ECHO.split()),
    }


async def test_complete_maps_tool_use_to_tool_calls(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.push_replies(Reply(text="Checking.", tool_calls=(ToolCall("get_weather", ARGS),)))
    result = await provider.complete(claude(fake), ask(tools=[WEATHER_TOOL]), RELAXED)
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("toolu_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == ARGS


async def test_max_tokens_stop_is_length(fake: FakeProvider, provider: AnthropicProvider) -> None:
    result = await provider.complete(claude(fake), ask(max_tokens=2), RELAXED)
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["choices"][0]["message"]["content"] == "echo: what"


async def test_stream_yields_role_content_finish_and_usage_chunks(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    chunks = await collect(provider.stream(claude(fake), ask(), RELAXED))
    assert sent(fake)["stream"] is True
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("msg_")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(chunks) == ECHO
    *_, finish, totals = chunks
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert totals["choices"] == []
    assert totals["usage"] == {
        "prompt_tokens": len(QUESTION.split()),
        "completion_tokens": len(ECHO.split()),
        "total_tokens": len(QUESTION.split()) + len(ECHO.split()),
    }


async def test_stream_tool_calls_arrive_as_indexed_deltas(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.push_replies(
        Reply(tool_calls=(ToolCall("get_weather", ARGS), ToolCall("get_time", {"tz": "CET"})))
    )
    chunks = await collect(provider.stream(claude(fake), ask(tools=[WEATHER_TOOL]), RELAXED))
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    opening = [d for d in deltas if "id" in d]
    assert [d["index"] for d in opening] == [0, 1]
    assert all(d["function"] == {"name": d["function"]["name"], "arguments": ""} for d in opening)
    assert len(deltas) > 4  # the arguments arrive in pieces
    first, second = streamed_tool_calls(chunks)
    assert first["name"] == "get_weather" and json.loads(first["arguments"]) == ARGS
    assert second["name"] == "get_time" and json.loads(second["arguments"]) == {"tz": "CET"}
    assert first["id"].startswith("toolu_") and first["id"] != second["id"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    totals = chunks[-1].get("usage")
    assert totals is not None and totals["completion_tokens"] > 0


# --- response_format through a forced tool --------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}


async def test_json_schema_is_forced_through_a_tool_and_returned_as_content(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    answer = {"name": "Ada", "age": 36}
    fake.push_replies(
        Reply(tool_calls=(ToolCall("json_response", answer),)),
        Reply(tool_calls=(ToolCall("json_response", answer),)),
    )
    result = await provider.complete(claude(fake), ask(response_format=JSON_SCHEMA), RELAXED)
    body = fake.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    [tool] = body["tools"]
    assert tool["name"] == "json_response" and tool["input_schema"] == PERSON
    [choice] = result["choices"]
    assert json.loads(choice["message"]["content"] or "") == answer
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"

    chunks = await collect(provider.stream(claude(fake), ask(response_format=JSON_SCHEMA), RELAXED))
    assert json.loads(streamed_text(chunks)) == answer
    assert streamed_tool_calls(chunks) == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_json_object_with_tools_lets_the_model_pick_a_tool_or_answer(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.push_replies(Reply(tool_calls=(ToolCall("get_weather", ARGS),)))
    result = await provider.complete(
        claude(fake),
        ask(tools=[WEATHER_TOOL], response_format={"type": "json_object"}),
        RELAXED,
    )
    body = sent(fake)
    assert body["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in body["tools"]] == ["get_weather", "json_response"]
    assert body["tools"][1]["input_schema"] == {"type": "object"}
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "error", "code"),
    [
        ({"status": 400}, BadRequest, "upstream_bad_request"),
        (
            {"status": 400, "error_message": "prompt is too long: 208310 tokens > 200000 maximum"},
            ContextTooLong,
            "context_length_exceeded",
        ),
        ({"status": 401}, AuthFailed, "upstream_auth_failed"),
        ({"status": 402}, AuthFailed, "upstream_auth_failed"),
        ({"status": 403}, AuthFailed, "upstream_auth_failed"),
        ({"status": 404}, BadRequest, "upstream_bad_request"),
        ({"status": 429}, RateLimited, "upstream_rate_limited"),
        ({"status": 500}, Unavailable, "upstream_unavailable"),
        ({"status": 529}, Unavailable, "upstream_unavailable"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_statuses_map_onto_the_domain_errors(
    fake: FakeProvider,
    provider: AnthropicProvider,
    faults: dict[str, Any],
    error: type[ProviderError],
    code: str,
    streaming: bool,
) -> None:
    fake.set_faults(**faults)
    with pytest.raises(error) as caught:
        if streaming:
            await collect(provider.stream(claude(fake), ask(), RELAXED))
        else:
            await provider.complete(claude(fake), ask(), RELAXED)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.provider == "anthropic"
    assert caught.value.upstream_status == faults["status"]


async def test_rate_limit_carries_retry_after(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.set_faults(status=429, retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await provider.complete(claude(fake), ask(), RELAXED)
    assert caught.value.retry_after == 7.0
    assert "rate limit" in caught.value.message


async def test_wrong_key_is_auth_failed(fake: FakeProvider, provider: AnthropicProvider) -> None:
    with pytest.raises(AuthFailed):
        await provider.complete(claude(fake, api_key="sk-wrong"), ask(), RELAXED)


@pytest.mark.parametrize(
    ("error_type", "error"),
    [
        ("overloaded_error", Unavailable),
        ("api_error", Unavailable),
        ("rate_limit_error", RateLimited),
        ("invalid_request_error", BadRequest),
    ],
)
async def test_error_event_mid_stream_raises_its_class(
    fake: FakeProvider,
    provider: AnthropicProvider,
    error_type: str,
    error: type[ProviderError],
) -> None:
    fake.set_faults(error_after_chunks=4, error_type=error_type)
    received = []
    with pytest.raises(error) as caught:
        async for chunk in provider.stream(claude(fake), ask(), RELAXED):
            received.append(chunk)
    assert type(caught.value) is error
    assert received and all(c["choices"][0]["finish_reason"] is None for c in received)


async def test_malformed_body_is_unavailable(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.set_faults(malformed="json")
    with pytest.raises(Unavailable) as caught:
        await provider.complete(claude(fake), ask(), RELAXED)
    assert caught.value.code == "malformed"


async def test_malformed_chunk_is_unavailable(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.set_faults(malformed="chunk", malformed_after_chunks=3)
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(claude(fake), ask(), RELAXED))
    assert caught.value.code == "malformed"


async def test_stream_without_message_stop_is_truncated(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.set_faults(truncate_after_chunks=5, truncate_mode="clean")
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(claude(fake), ask(), RELAXED))
    assert caught.value.code == "truncated"


async def test_dropped_connection_mid_stream_is_truncated(
    fake: FakeProvider, provider: AnthropicProvider
) -> None:
    fake.set_faults(truncate_after_chunks=5, truncate_mode="abort")
    with pytest.raises(Unavailable) as caught:
        await collect(provider.stream(claude(fake), ask(), RELAXED))
    assert caught.value.code == "truncated"  # aiohttp: ClientPayloadError mid-body


async def test_stalled_stream_times_out(fake: FakeProvider, provider: AnthropicProvider) -> None:
    fake.set_faults(stall_after_chunks=3)
    with pytest.raises(Timeout, match="next chunk"):
        await collect(provider.stream(claude(fake), ask(), FAST))


async def test_late_first_chunk_times_out(fake: FakeProvider, provider: AnthropicProvider) -> None:
    fake.set_faults(first_byte_delay_ms=800)
    with pytest.raises(Timeout, match="first chunk"):
        await collect(provider.stream(claude(fake), ask(), FAST))


async def test_hung_request_times_out(fake: FakeProvider, provider: AnthropicProvider) -> None:
    fake.set_faults(hang=True)
    with pytest.raises(Timeout):
        await provider.complete(claude(fake), ask(), FAST)


async def test_refused_connection_is_unavailable(provider: AnthropicProvider) -> None:
    with RefusedPort("anthropic") as port, pytest.raises(Unavailable):
        await provider.complete(claude(port), ask(), FAST)


async def test_refusal_is_content_filtered(fake: FakeProvider, provider: AnthropicProvider) -> None:
    fake.push_replies(Reply(finish="safety"), Reply(finish="safety"))
    with pytest.raises(ContentFiltered):
        await provider.complete(claude(fake), ask(), RELAXED)
    with pytest.raises(ContentFiltered):
        await collect(provider.stream(claude(fake), ask(), RELAXED))


async def test_embeddings_are_refused(fake: FakeProvider, provider: AnthropicProvider) -> None:
    with pytest.raises(BadRequest, match="embeddings"):
        await provider.embed(claude(fake), EmbeddingRequest(model=MODEL, inputs=["x"]), RELAXED)
    assert fake.requests == []
