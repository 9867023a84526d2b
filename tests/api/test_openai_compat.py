"""The OpenAI-compatible API, driven by the real `openai` SDK and by curl-like httpx calls,
in front of fake providers speaking each wire format."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from decimal import Decimal

import httpx
import openai
import pytest
from sqlalchemy import select

from polymodal.db.engine import create_engine, session_factory
from polymodal.db.models import UsageEvent
from polymodal.testing import Reply, ToolCall
from tests.api.conftest import FAKE_KEY, Env

CHAT_DEPLOYMENTS = ["fake-openai", "fake-anthropic", "fake-gemini"]


def client(env: Env, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.base_url, api_key=env.key, max_retries=0, **kw)  # type: ignore[arg-type]


def usage_rows(env: Env, request_id: str | None = None) -> list[UsageEvent]:
    env.flush_usage()
    import asyncio

    async def rows() -> list[UsageEvent]:
        engine = create_engine(env.server.state.settings)
        try:
            async with session_factory(engine)() as s:
                q = select(UsageEvent).order_by(UsageEvent.id)
                if request_id is not None:
                    q = q.where(UsageEvent.request_id == request_id)
                return list((await s.execute(q)).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(rows())


@pytest.mark.parametrize("deployment", CHAT_DEPLOYMENTS)
def test_chat_through_each_wire(env: Env, deployment: str) -> None:
    c = client(env)
    raw = c.chat.completions.with_raw_response.create(
        model=deployment, messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert raw.headers["x-polymodal-deployment"] == deployment
    rows = usage_rows(env, raw.headers["x-request-id"])
    assert len(rows) == 1
    row = rows[0]
    assert (row.deployment, row.status, row.stream) == (deployment, "ok", False)
    assert str(row.tenant_id) == env.tenant_id
    assert row.tokens_out == 3 and row.tokens_in > 0
    assert row.cost == Decimal(row.tokens_in * 1 + row.tokens_out * 2) / Decimal(1_000_000)


@pytest.mark.parametrize("deployment", CHAT_DEPLOYMENTS)
def test_streaming_through_each_wire(env: Env, deployment: str) -> None:
    c = client(env)
    stream = c.chat.completions.create(
        model=deployment,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "echo: one two three four"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 5


def test_stream_without_include_usage_has_no_usage_chunk(env: Env) -> None:
    with httpx.stream(
        "POST",
        env.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {env.key}"},
        json={
            "model": "fake-anthropic",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
    ) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("deployment", CHAT_DEPLOYMENTS)
def test_tool_calls_through_each_wire(env: Env, deployment: str) -> None:
    wire = deployment.removeprefix("fake-")
    env.fakes[wire].push_replies(
        Reply(tool_calls=(ToolCall(name="get_weather", arguments={"city": "Paris"}),))
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    completion = client(env).chat.completions.create(
        model=deployment,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


async def test_async_sdk_streams(env: Env) -> None:
    c = openai.AsyncOpenAI(base_url=env.base_url, api_key=env.key, max_retries=0)
    stream = await c.chat.completions.create(
        model="fake-gemini", messages=[{"role": "user", "content": "async works"}], stream=True
    )
    text = "".join(
        [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    )
    assert text == "echo: async works"
    await c.close()


@pytest.mark.parametrize(
    ("deployment", "dims"),
    [("fake-openai-embed", 1536), ("fake-gemini-embed", 768), ("fake-cohere-embed", 1024)],
)
def test_embeddings_through_each_wire(env: Env, deployment: str, dims: int) -> None:
    result = client(env).embeddings.create(model=deployment, input=["alpha", "beta"])
    assert [len(d.embedding) for d in result.data] == [dims, dims]
    assert result.data[0].embedding != result.data[1].embedding
    # Deterministic: the same text embeds the same way again.
    again = client(env).embeddings.create(model=deployment, input="alpha")
    assert again.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)


def test_embeddings_float_and_base64_agree(env: Env) -> None:
    headers = {"Authorization": f"Bearer {env.key}"}
    body = {"model": "fake-openai-embed", "input": "same text", "dimensions": 16}
    as_float = httpx.post(
        env.base_url + "/embeddings", headers=headers, json={**body, "encoding_format": "float"}
    ).json()
    as_b64 = httpx.post(
        env.base_url + "/embeddings", headers=headers, json={**body, "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == 16
    assert list(decoded) == pytest.approx(as_float["data"][0]["embedding"], abs=1e-6)


def test_models_lists_availability(env: Env) -> None:
    models = {m.id: m for m in client(env).models.list()}
    assert {"fake-openai", "fake-anthropic", "local-smollm2"} <= set(models)
    extra = models["fake-no-key"].model_extra or {}
    assert extra["polymodal"]["available"] is False
    assert "UNSET_KEY_VAR is not set" in extra["polymodal"]["unavailable_reason"]
    assert (models["fake-openai"].model_extra or {})["polymodal"]["available"] is True


def test_model_may_be_a_provider_model_name(env: Env) -> None:
    completion = client(env).chat.completions.create(
        model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": "by name"}]
    )
    assert completion.choices[0].message.content == "echo: by name"


# --- upstream failures map to the right status, and never leak the provider key ----------


@pytest.mark.parametrize(
    ("faults", "status", "exc"),
    [
        ({"status": 429, "retry_after": 7}, 429, openai.RateLimitError),
        ({"status": 503}, 503, openai.InternalServerError),
        ({"status": 500}, 503, openai.InternalServerError),
        ({"malformed": "json"}, 503, openai.InternalServerError),
        ({"hang": True}, 504, openai.InternalServerError),
        ({"status": 401}, 502, openai.InternalServerError),
        ({"status": 400, "error_message": "bad thing"}, 400, openai.BadRequestError),
    ],
)
def test_upstream_failures(env: Env, faults: dict[str, object], status: int, exc: type) -> None:
    env.fakes["openai"].set_faults(**faults)
    with pytest.raises(exc) as info:
        client(env).chat.completions.create(
            model="fake-openai", messages=[{"role": "user", "content": "x"}]
        )
    error: openai.APIStatusError = info.value  # type: ignore[assignment]
    assert error.status_code == status
    assert FAKE_KEY not in error.response.text
    assert "Traceback" not in error.response.text
    if status == 429:
        assert error.response.headers["retry-after"] == "7"
    request_id = error.response.headers["x-request-id"]
    rows = usage_rows(env, request_id)
    assert len(rows) == 1 and rows[0].status != "ok" and rows[0].cost == 0


def test_anthropic_overloaded_is_503(env: Env) -> None:
    env.fakes["anthropic"].set_faults(status=529)
    with pytest.raises(openai.InternalServerError) as info:
        client(env).chat.completions.create(
            model="fake-anthropic", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 503


def test_stream_broken_after_first_chunk_ends_with_an_error_event(env: Env) -> None:
    env.fakes["openai"].set_faults(truncate_after_chunks=3)
    with httpx.stream(
        "POST",
        env.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {env.key}"},
        json={
            "model": "fake-openai",
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f g"}],
        },
    ) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert "data: [DONE]" not in lines
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] in ("truncated", "upstream_unavailable")
    assert "'fake-openai'" in last["error"]["message"]

    # The SDK sees it as an error too, never as a clean finish.
    env.fakes["openai"].set_faults(stall_after_chunks=3)
    with pytest.raises(openai.APIError):
        for _ in client(env).chat.completions.create(
            model="fake-openai", stream=True, messages=[{"role": "user", "content": "a b c d"}]
        ):
            pass


def test_stream_failing_before_first_byte_is_an_http_error(env: Env) -> None:
    env.fakes["gemini"].set_faults(status=503)
    with pytest.raises(openai.InternalServerError):
        client(env).chat.completions.create(
            model="fake-gemini", stream=True, messages=[{"role": "user", "content": "x"}]
        )


# --- bad input: 4xx naming the problem; nothing reaches a provider or is billed ---------


def _post(env: Env, body: object, path: str = "/chat/completions", **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {env.key}", "x-request-id": uuid.uuid4().hex}
    if isinstance(body, bytes):
        return httpx.post(
            env.base_url + path,
            headers={**headers, "content-type": "application/json"},
            content=body,
        )
    return httpx.post(env.base_url + path, headers=headers, json=body)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"model": "fake-openai", "messages": [', 400, "Malformed JSON"),
        ({"messages": [{"role": "user", "content": "x"}]}, 422, "model"),
        (
            {"model": "nope-model", "messages": [{"role": "user", "content": "x"}]},
            404,
            "nope-model",
        ),
        ({"model": "fake-openai", "messages": []}, 422, "messages"),
        ({"model": "fake-openai", "messages": [{"role": "wizard", "content": "x"}]}, 422, "role"),
        (
            {
                "model": "fake-openai",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 7,
            },
            422,
            "temperature",
        ),
        (
            {"model": "fake-openai", "messages": [{"role": "user", "content": "word " * 1200}]},
            400,
            "context window",
        ),
        (
            {
                "model": "fake-openai",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 900,
            },
            400,
            "max_tokens",
        ),
        (
            {"model": "fake-no-key", "messages": [{"role": "user", "content": "x"}]},
            503,
            "UNSET_KEY_VAR",
        ),
        (
            {"model": "fake-openai-embed", "messages": [{"role": "user", "content": "x"}]},
            400,
            "embedding model",
        ),
        (
            {
                "model": "local-smollm2",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            400,
            "tools",
        ),
    ],
)
def test_bad_chat_input(env: Env, body: object, status: int, needle: str) -> None:
    before = len(env.fakes["openai"].requests)
    r = _post(env, body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert len(env.fakes["openai"].requests) == before
    assert usage_rows(env, r.request.headers["x-request-id"]) == []


def test_oversized_body_is_413(env: Env) -> None:
    r = _post(
        env,
        {
            "model": "fake-openai",
            "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}],
        },
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "fake-openai-embed", "input": [1, 2, 3]}, 400, "token-array"),
        ({"model": "fake-openai", "input": "x"}, 400, "chat model"),
        ({"model": "fake-openai-embed", "input": []}, 400, "empty"),
        ({"model": "local-e5-small", "input": "x", "dimensions": 10}, 400, "dimensions"),
    ],
)
def test_bad_embedding_input(env: Env, body: object, status: int, needle: str) -> None:
    r = _post(env, body, path="/embeddings")
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_requests_need_a_key(env: Env) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=env.base_url, api_key="pm_wrong", max_retries=0).models.list()
