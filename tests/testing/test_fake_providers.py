"""The fake providers speak each wire exactly and their faults really happen."""

from __future__ import annotations

import base64
import json
import math
import selectors
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polymodal.testing import FakeProvider, Faults, RefusedPort, Reply, ToolCall

Json = dict[str, Any]

USER_TEXT = "what is the weather in Paris today"
ECHO = "echo: " + USER_TEXT
ANTHROPIC_HEADERS = {"x-api-key": "sk-fake", "anthropic-version": "2023-06-01"}
GEMINI_KEY = "AIza-fake"
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeProvider]:
    with FakeProvider("openai", api_key="sk-fake") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeProvider]:
    with FakeProvider("anthropic", api_key="sk-fake") as fake:
        yield fake


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeProvider]:
    with FakeProvider("gemini", api_key=GEMINI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def cohere() -> Iterator[FakeProvider]:
    with FakeProvider("cohere", api_key="co-fake") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    for name in ("openai", "anthropic", "gemini", "cohere"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def client(fake: FakeProvider, *, auth: bool = True, **kwargs: Any) -> httpx.Client:
    """A client for the fake's base_url, with the right credentials unless ``auth=False``."""
    headers: dict[str, str] = {
        "openai": {"Authorization": "Bearer sk-fake"},
        "anthropic": ANTHROPIC_HEADERS,
        "gemini": {"x-goog-api-key": GEMINI_KEY},
        "cohere": {"Authorization": "Bearer co-fake"},
    }[fake.wire]
    kwargs.setdefault("timeout", 5)
    # verify=False: plain HTTP only, and it skips loading the CA bundle for every client.
    return httpx.Client(
        base_url=fake.base_url, headers=headers if auth else {}, verify=False, **kwargs
    )


def chat(c: httpx.Client, wire: str, *, stream: bool = False, **extra: Any) -> httpx.Response:
    path, body = chat_request(wire, stream=stream, **extra)
    return c.post(path, json=body)


def chat_request(wire: str, *, stream: bool, tools: bool = False, **extra: Any) -> tuple[str, Json]:
    """(path relative to base_url, JSON body) of a chat request on this wire."""
    if wire == "openai":
        body: Json = {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": USER_TEXT},
            ],
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = [
                {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
            ]
        return "/chat/completions", body | extra
    if wire == "anthropic":
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": USER_TEXT}]}],
        }
        if stream:
            body["stream"] = True
        if tools:
            body["tools"] = [{"name": "get_weather", "input_schema": {"type": "object"}}]
        return "/v1/messages", body | extra
    body = {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": USER_TEXT}]}],
    }
    if tools:
        body["tools"] = [{"functionDeclarations": [{"name": "get_weather"}]}]
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/gemini-2.0-flash:{method}", body | extra


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event (LF or CRLF line endings)."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((event, "\n".join(data)))
    return events


def is_complete(wire: str, events: list[tuple[str | None, str]]) -> bool:
    """Did the stream reach the wire's terminator?"""
    if not events:
        return False
    event, data = events[-1]
    if wire == "openai":
        return data == "[DONE]"
    if wire == "anthropic":
        return event == "message_stop"
    try:
        return "finishReason" in json.loads(data)["candidates"][0]
    except (ValueError, KeyError, IndexError):
        return False


def read_stream(
    fake: FakeProvider, *, read_timeout: float = 5, **extra: Any
) -> tuple[bytes, BaseException | None]:
    """All bytes of a chat stream, and the exception that ended the read, if any."""
    path, body = chat_request(fake.wire, stream=True, **extra)
    received = b""
    with client(fake, timeout=httpx.Timeout(5, read=read_timeout)) as c:
        try:
            with c.stream("POST", path, json=body) as resp:
                assert resp.status_code == 200
                for piece in resp.iter_raw():
                    received += piece
        except httpx.HTTPError as exc:
            return received, exc
    return received, None


def norm(vec: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vec))


# --------------------------------------------------------------------------- OpenAI


def test_openai_chat_completion_shape(openai: FakeProvider) -> None:
    path, body = chat_request("openai", stream=False)
    with client(openai) as c:
        resp = c.post(path, json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-request-id"].startswith("req_")
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-4o"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ECHO, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    usage = data["usage"]
    assert usage["prompt_tokens"] == 2 + len(USER_TEXT.split())
    assert usage["completion_tokens"] == len(ECHO.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_openai_stream_chunks_usage_and_done(openai: FakeProvider) -> None:
    raw, err = read_stream(openai)
    assert err is None
    text = raw.decode()
    assert all(line.startswith("data: ") for line in text.split("\n\n") if line)
    events = sse_events(text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert content == ECHO
    assert len(chunks) == len(ECHO.split()) + 3  # role, words, finish, usage
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(ECHO.split())


def test_openai_stream_without_include_usage_has_no_usage(openai: FakeProvider) -> None:
    raw, _ = read_stream(openai, stream_options=None)
    chunks = [json.loads(d) for _, d in sse_events(raw.decode())[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_tool_calls(openai: FakeProvider) -> None:
    call = ToolCall("get_weather", TOOL_ARGS)
    openai.push_replies(*[Reply(tool_calls=(call,))] * 3)
    with client(openai) as c:
        path, body = chat_request("openai", stream=False, tools=True)
        message = c.post(path, json=body).json()["choices"][0]
        # Without tools in the request the scripted tool call is not made.
        plain = chat(c, "openai").json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    [tc] = message["message"]["tool_calls"]
    assert tc["id"].startswith("call_") and tc["type"] == "function"
    assert tc["function"]["name"] == "get_weather"
    assert json.loads(tc["function"]["arguments"]) == TOOL_ARGS
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"]

    raw, _ = read_stream(openai, tools=True)
    chunks = [json.loads(d) for _, d in sse_events(raw.decode())[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    first = deltas[0]["tool_calls"][0]
    assert deltas[0]["role"] == "assistant"
    assert first["index"] == 0 and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:] if "tool_calls" in d]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == TOOL_ARGS
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_max_tokens_truncates_with_length(openai: FakeProvider) -> None:
    path, body = chat_request("openai", stream=False, max_completion_tokens=2)
    with client(openai) as c:
        data = c.post(path, json=body).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["choices"][0]["message"]["content"] == "echo: what"
    assert data["usage"]["completion_tokens"] == 2


def test_openai_embeddings_float_base64_dimensions(openai: FakeProvider) -> None:
    with client(openai) as c:
        full = c.post("/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})
        floats = c.post(
            "/embeddings",
            json={"model": "text-embedding-3-small", "input": ["a b c", "d"], "dimensions": 16},
        ).json()
        b64 = c.post(
            "/embeddings",
            json={
                "model": "text-embedding-3-small",
                "input": ["a b c", "d"],
                "dimensions": 16,
                "encoding_format": "base64",
            },
        ).json()
    assert len(full.json()["data"][0]["embedding"]) == 1536
    assert floats["object"] == "list" and floats["model"] == "text-embedding-3-small"
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [d["index"] for d in floats["data"]] == [0, 1]
    v0, v1 = (d["embedding"] for d in floats["data"])
    assert len(v0) == 16 and v0 != v1
    assert abs(norm(v0) - 1) < 1e-5
    decoded = base64.b64decode(b64["data"][0]["embedding"])
    assert decoded == struct.pack("<16f", *v0)


def test_openai_embedding_errors(openai: FakeProvider) -> None:
    with client(openai) as c:
        missing = c.post("/embeddings", json={"model": "text-embedding-3-small"})
        ada = c.post(
            "/embeddings",
            json={"model": "text-embedding-ada-002", "input": "x", "dimensions": 8},
        )
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "message": "Missing required parameter: 'input'.",
            "type": "invalid_request_error",
            "param": "input",
            "code": "missing_required_parameter",
        }
    }
    assert ada.status_code == 400
    assert ada.json()["error"]["message"] == "This model does not support specifying dimensions."


def test_openai_models(openai: FakeProvider) -> None:
    with client(openai) as c:
        listing = c.get("/models").json()
        one = c.get("/models/gpt-4o").json()
        missing = c.get("/models/nope")
    assert listing["object"] == "list"
    assert {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"} in (
        listing["data"]
    )
    assert one["id"] == "gpt-4o"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_openai_auth_and_request_errors(openai: FakeProvider) -> None:
    path, body = chat_request("openai", stream=False)
    with client(openai, auth=False) as anon:
        none = anon.post(path, json=body)
        wrong = anon.post(path, json=body, headers={"Authorization": "Bearer sk-wrong-secret-1234"})
    with client(openai) as c:
        bad_json = c.post(path, content=b"{nope", headers={"content-type": "application/json"})
        unknown = c.post("/nowhere", json={})
    assert none.status_code == 401
    assert none.json()["error"]["message"].startswith("You didn't provide an API key.")
    assert none.json()["error"]["code"] is None
    assert wrong.status_code == 401
    err = wrong.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
    assert "sk-wrong-secret-1234" not in err["message"] and "1234" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["message"].startswith("We could not parse the JSON body")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/nowhere)"


def test_replies_are_deterministic(openai: FakeProvider) -> None:
    path, body = chat_request("openai", stream=False)
    with client(openai) as c:
        a, b = c.post(path, json=body).json(), c.post(path, json=body).json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert a["id"] != b["id"]


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_message_shape(anthropic: FakeProvider) -> None:
    path, body = chat_request("anthropic", stream=False)
    with client(anthropic) as c:
        resp = c.post(path, json=body)
    assert resp.status_code == 200
    assert resp.headers["request-id"].startswith("req_")
    data = resp.json()
    assert data["id"].startswith("msg_")
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["content"] == [{"type": "text", "text": ECHO}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    assert data["usage"]["input_tokens"] == 2 + len(USER_TEXT.split())
    assert data["usage"]["output_tokens"] == len(ECHO.split())


def test_anthropic_stream_event_sequence(anthropic: FakeProvider) -> None:
    raw, err = read_stream(anthropic)
    assert err is None
    events = sse_events(raw.decode())
    names = [e for e, _ in events]
    words = len(ECHO.split())
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(d) for _, d in events]
    assert all(p["type"] == n for p, n in zip(payloads, names, strict=True))
    start = payloads[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 2 + len(USER_TEXT.split())
    assert payloads[1]["content_block"] == {"type": "text", "text": ""}
    deltas = [p["delta"] for p in payloads if p["type"] == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == ECHO
    assert payloads[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[-2]["usage"] == {"output_tokens": words}


def test_anthropic_tool_use(anthropic: FakeProvider) -> None:
    anthropic.push_replies(
        {"text": "Checking.", "tool_calls": [{"name": "get_weather", "arguments": TOOL_ARGS}]},
        {"tool_calls": [{"name": "get_weather", "arguments": TOOL_ARGS}]},
    )
    path, body = chat_request("anthropic", stream=False, tools=True)
    with client(anthropic) as c:
        data = c.post(path, json=body).json()
    assert data["stop_reason"] == "tool_use"
    text, tool = data["content"]
    assert text == {"type": "text", "text": "Checking."}
    assert tool["type"] == "tool_use" and tool["id"].startswith("toolu_")
    assert tool["name"] == "get_weather" and tool["input"] == TOOL_ARGS

    raw, _ = read_stream(anthropic, tools=True)
    payloads = [json.loads(d) for _, d in sse_events(raw.decode())]
    block = payloads[1]["content_block"]
    assert block["type"] == "tool_use" and block["input"] == {} and block["name"] == "get_weather"
    parts = [
        p["delta"]["partial_json"]
        for p in payloads
        if p["type"] == "content_block_delta" and p["delta"]["type"] == "input_json_delta"
    ]
    assert len(parts) > 2
    assert json.loads("".join(parts)) == TOOL_ARGS
    assert payloads[-2]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_auth_version_and_validation(anthropic: FakeProvider) -> None:
    path, body = chat_request("anthropic", stream=False)
    with client(anthropic, auth=False) as anon:
        missing = anon.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
        wrong = anon.post(path, json=body, headers={**ANTHROPIC_HEADERS, "x-api-key": "nope"})
        no_version = anon.post(path, json=body, headers={"x-api-key": "sk-fake"})
        del body["max_tokens"]
        invalid = anon.post(path, json=body, headers=ANTHROPIC_HEADERS)
    assert missing.status_code == 401
    assert missing.json()["type"] == "error"
    assert missing.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    assert missing.json()["request_id"] == missing.headers["request-id"]
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["message"] == "max_tokens: Field required"


def test_anthropic_overloaded_in_stream(anthropic: FakeProvider) -> None:
    anthropic.set_faults(error_after_chunks=4)
    raw, err = read_stream(anthropic)
    assert err is None
    events = sse_events(raw.decode())
    assert len(events) == 5
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert "message_stop" not in [e for e, _ in events]


# --------------------------------------------------------------------------- Gemini


def test_gemini_generate_content_shape(gemini: FakeProvider) -> None:
    path, body = chat_request("gemini", stream=False)
    with client(gemini) as c:
        resp = c.post(path, json=body)
    assert resp.status_code == 200
    data = resp.json()
    [candidate] = data["candidates"]
    assert candidate["content"] == {"parts": [{"text": ECHO}], "role": "model"}
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == 2 + len(USER_TEXT.split())
    assert usage["candidatesTokenCount"] == len(ECHO.split())
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert data["modelVersion"] == "gemini-2.0-flash"


def test_gemini_stream_sse_and_json_array(gemini: FakeProvider) -> None:
    raw, err = read_stream(gemini)
    assert err is None
    assert raw.endswith(b"\r\n\r\n") and b"\r\n\r\ndata: " in raw
    assert raw.decode().startswith("data: ")
    chunks = [json.loads(d) for _, d in sse_events(raw.decode())]
    assert len(chunks) == len(ECHO.split())
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == ECHO
    finished = ["finishReason" in c["candidates"][0] for c in chunks]
    assert finished == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == len(ECHO.split())
    # Without alt=sse the same responses arrive as one JSON array.
    path, body = chat_request("gemini", stream=True)
    with client(gemini) as c:
        array = c.post(path.replace("?alt=sse", ""), json=body)
    assert array.headers["content-type"].startswith("application/json")
    elements = array.json()
    assert [e["candidates"] for e in elements] == [c["candidates"] for c in chunks]


def test_gemini_function_call_and_safety(gemini: FakeProvider) -> None:
    gemini.push_replies(
        Reply(tool_calls=(ToolCall("get_weather", TOOL_ARGS),)),
        Reply(finish="safety"),
        Reply(finish="blocked"),
        Reply(finish="blocked"),
    )
    with client(gemini) as c:
        call = chat(c, "gemini", tools=True).json()
        safety = chat(c, "gemini").json()
        blocked = chat(c, "gemini").json()
    assert call["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": TOOL_ARGS}}
    ]
    assert call["candidates"][0]["finishReason"] == "STOP"
    assert safety["candidates"][0]["finishReason"] == "SAFETY"
    assert "content" not in safety["candidates"][0]
    assert any(r.get("blocked") for r in safety["candidates"][0]["safetyRatings"])
    assert "candidates" not in blocked
    assert blocked["promptFeedback"]["blockReason"] == "SAFETY"
    raw, _ = read_stream(gemini)
    [only] = [json.loads(d) for _, d in sse_events(raw.decode())]
    assert only["promptFeedback"]["blockReason"] == "SAFETY"


def test_gemini_auth(gemini: FakeProvider) -> None:
    path, body = chat_request("gemini", stream=False)
    with client(gemini, auth=False) as anon:
        by_query = anon.post(path, params={"key": GEMINI_KEY}, json=body)
        wrong = anon.post(path, params={"key": "bad"}, json=body)
        missing = anon.post(path, json=body)
    assert by_query.status_code == 200
    assert gemini.requests[0]["query"] == {}  # the key is not recorded
    assert wrong.status_code == 400
    err = wrong.json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert err["message"] == "API key not valid. Please pass a valid API key."
    assert err["details"][0]["reason"] == "API_KEY_INVALID"
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"


def test_gemini_embeddings(gemini: FakeProvider) -> None:
    with client(gemini) as c:
        one = c.post(
            "/v1beta/models/text-embedding-004:embedContent",
            json={"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}},
        ).json()
        batch = c.post(
            "/v1beta/models/text-embedding-004:batchEmbedContents",
            json={
                "requests": [
                    {
                        "model": "models/text-embedding-004",
                        "content": {"parts": [{"text": t}]},
                        "outputDimensionality": 32,
                    }
                    for t in ("hi", "there")
                ]
            },
        ).json()
    assert len(one["embedding"]["values"]) == 768
    first, second = (e["values"] for e in batch["embeddings"])
    assert len(first) == 32 and first != second
    assert abs(norm(first) - 1) < 1e-5


# --------------------------------------------------------------------------- Cohere


def test_cohere_embed_floats_and_by_type(cohere: FakeProvider) -> None:
    texts = ["hello world", "bye"]
    base = {"texts": texts, "model": "embed-english-v3.0", "input_type": "search_document"}
    with client(cohere) as c:
        floats = c.post("/v1/embed", json=base).json()
        typed = c.post("/v1/embed", json=base | {"embedding_types": ["float", "int8"]}).json()
    assert floats["response_type"] == "embeddings_floats"
    assert floats["texts"] == texts
    assert floats["meta"]["billed_units"] == {"input_tokens": 3}
    assert floats["meta"]["api_version"]["version"] == "1"
    assert [len(v) for v in floats["embeddings"]] == [1024, 1024]
    assert typed["response_type"] == "embeddings_by_type"
    assert set(typed["embeddings"]) == {"float", "int8"}
    assert typed["embeddings"]["float"] == floats["embeddings"]
    assert all(-128 <= x <= 127 for x in typed["embeddings"]["int8"][0])


def test_cohere_errors(cohere: FakeProvider) -> None:
    body = {"texts": ["x"], "model": "embed-english-v3.0"}
    with client(cohere, auth=False) as anon:
        missing = anon.post("/v1/embed", json=body)
        wrong = anon.post("/v1/embed", json=body, headers={"Authorization": "Bearer nope"})
    with client(cohere) as c:
        no_input_type = c.post("/v1/embed", json=body)
    assert (missing.status_code, missing.json()) == (401, {"message": "no api key supplied"})
    assert (wrong.status_code, wrong.json()) == (401, {"message": "invalid api token"})
    assert no_input_type.status_code == 400
    assert no_input_type.json() == {
        "message": "invalid request: valid input_type must be provided with the provided model"
    }


# --------------------------------------------------------------------------- faults

STATUS_CASES = [
    ("openai", 429, lambda b: b["error"]["type"] == "requests"
     and b["error"]["code"] == "rate_limit_exceeded"),
    ("anthropic", 529, lambda b: b["error"]["type"] == "overloaded_error"),
    ("anthropic", 429, lambda b: b["error"]["type"] == "rate_limit_error"),
    ("gemini", 503, lambda b: b["error"] | {"message": ""}
     == {"code": 503, "message": "", "status": "UNAVAILABLE"}),
    ("cohere", 500, lambda b: set(b) == {"message"}),
]  # fmt: skip


@pytest.mark.parametrize(("wire", "status", "check"), STATUS_CASES)
def test_status_fault_uses_the_provider_error_body(
    wire: str, status: int, check: Any, request: pytest.FixtureRequest
) -> None:
    fake: FakeProvider = request.getfixturevalue(wire)
    fake.set_faults(status=status, retry_after=3)
    if wire == "cohere":
        path: str = "/v1/embed"
        body: Json = {"texts": ["x"], "model": "m"}
    else:
        path, body = chat_request(wire, stream=True)
    with client(fake) as c:
        resp = c.post(path, json=body)
    assert resp.status_code == status
    assert resp.headers["retry-after"] == "3"
    assert check(resp.json())


def test_429_sends_retry_after_by_default(openai: FakeProvider, gemini: FakeProvider) -> None:
    openai.set_faults(status=429)
    gemini.set_faults(status=429)
    with client(openai) as c:
        resp = chat(c, "openai")
    with client(gemini) as c:
        gresp = chat(c, "gemini")
    assert resp.headers["retry-after"] == "1"
    # Gemini says it in the body (google.rpc.RetryInfo), not in a header.
    assert "retry-after" not in gresp.headers
    assert gresp.json()["error"]["details"][-1]["retryDelay"] == "1s"


def test_times_applies_to_the_next_n_requests_only(openai: FakeProvider) -> None:
    openai.set_faults(status=500, times=2)
    with client(openai) as c:
        codes = [chat(c, "openai").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert openai.faults.status == 500  # still configured, just used up


def test_match_model_and_path(openai: FakeProvider) -> None:
    openai.set_faults(status=503, match_model="gpt-4o-mini")
    with client(openai) as c:
        other = chat(c, "openai")
        hit = chat(c, "openai", model="gpt-4o-mini")
        openai.set_faults(status=503, match_path="/embeddings")
        plain = chat(c, "openai")
        emb = c.post("/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert (other.status_code, hit.status_code) == (200, 503)
    assert (plain.status_code, emb.status_code) == (200, 503)


def test_latency(openai: FakeProvider) -> None:
    openai.set_faults(latency_ms=300)
    with client(openai) as c:
        start = time.perf_counter()
        resp = chat(c, "openai")
        elapsed = time.perf_counter() - start
    assert resp.status_code == 200
    assert elapsed >= 0.3


def test_hang_is_detected_by_a_client_timeout(openai: FakeProvider) -> None:
    openai.set_faults(hang=True, times=1)
    with client(openai, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            chat(c, "openai")
        # The fault was for one request: the server answers again.
        assert chat(c, "openai").status_code == 200


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_first_byte_delay(wire: str, request: pytest.FixtureRequest) -> None:
    fake: FakeProvider = request.getfixturevalue(wire)
    fake.set_faults(first_byte_delay_ms=500)
    path, body = chat_request(wire, stream=True)
    with client(fake) as c:
        start = time.perf_counter()
        with c.stream("POST", path, json=body) as resp:
            headers_at = time.perf_counter() - start
            chunks = resp.iter_raw()
            first = next(chunks)
            first_at = time.perf_counter() - start
            rest = first + b"".join(chunks)
    assert resp.status_code == 200
    assert first_at >= 0.5
    assert first_at - headers_at >= 0.3  # the headers came well before the first chunk
    assert is_complete(wire, sse_events(rest.decode()))


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_stall_after_chunks(wire: str, request: pytest.FixtureRequest) -> None:
    fake: FakeProvider = request.getfixturevalue(wire)
    fake.set_faults(stall_after_chunks=2)
    raw, err = read_stream(fake, read_timeout=0.5)
    assert isinstance(err, httpx.ReadTimeout)
    events = sse_events(raw.decode())
    assert len(events) == 2
    assert not is_complete(wire, events)


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_truncate_after_chunks_drops_the_connection(
    wire: str, request: pytest.FixtureRequest
) -> None:
    fake: FakeProvider = request.getfixturevalue(wire)
    fake.set_faults(truncate_after_chunks=3)
    raw, err = read_stream(fake)
    assert isinstance(err, httpx.RemoteProtocolError)  # incomplete chunked body
    events = sse_events(raw.decode())
    assert len(events) == 3
    assert not is_complete(wire, events)


def test_truncate_clean_ends_the_body_without_terminator(openai: FakeProvider) -> None:
    openai.set_faults(truncate_after_chunks=3, truncate_mode="clean")
    raw, err = read_stream(openai)
    assert err is None
    events = sse_events(raw.decode())
    assert len(events) == 3
    assert not is_complete("openai", events)


def test_malformed_json_body(openai: FakeProvider, anthropic: FakeProvider) -> None:
    for fake in (openai, anthropic):
        fake.set_faults(malformed="json")
        with client(fake) as c:
            resp = chat(c, fake.wire)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.content)


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_malformed_chunk(wire: str, request: pytest.FixtureRequest) -> None:
    fake: FakeProvider = request.getfixturevalue(wire)
    fake.set_faults(malformed="chunk", malformed_after_chunks=1)
    raw, err = read_stream(fake)
    assert err is None
    events = sse_events(raw.decode())
    bad = []
    for i, (_, data) in enumerate(events):
        if data == "[DONE]":
            continue
        try:
            json.loads(data)
        except json.JSONDecodeError:
            bad.append(i)
    assert bad == [1]
    assert is_complete(wire, events)  # the stream goes on after the bad line


def test_openai_error_after_chunks(openai: FakeProvider) -> None:
    openai.set_faults(error_after_chunks=2)
    raw, err = read_stream(openai)
    assert err is None
    events = sse_events(raw.decode())
    assert len(events) == 3
    assert json.loads(events[-1][1])["error"]["type"] == "server_error"
    assert not is_complete("openai", events)


def test_chunk_delay(gemini: FakeProvider) -> None:
    gemini.set_faults(chunk_delay_ms=100)
    start = time.perf_counter()
    raw, _ = read_stream(gemini)
    elapsed = time.perf_counter() - start
    n = len(sse_events(raw.decode()))
    assert n == len(ECHO.split())
    assert elapsed >= (n - 1) * 0.1


def test_faults_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.from_dict({"stauts": 500})
    with pytest.raises(ValueError, match="status"):
        Faults.from_dict({"status": 200})
    assert Faults.from_dict({"status": 500, "times": 1}).to_dict() == {"status": 500, "times": 1}


# --------------------------------------------------------------------------- control endpoint


def test_control_endpoint(anthropic: FakeProvider) -> None:
    ctl = httpx.Client(base_url=anthropic.origin + "/_fake", timeout=5, verify=False)
    with ctl, client(anthropic) as c:
        bad = ctl.post("/faults", json={"nope": 1})
        assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]
        set_ = ctl.post("/faults", json={"status": 529, "times": 1}).json()
        assert set_ == {"faults": {"status": 529, "times": 1}, "remaining": 1}
        assert chat(c, "anthropic").status_code == 529
        assert ctl.get("/faults").json()["remaining"] == 0
        assert chat(c, "anthropic").status_code == 200

        ctl.post("/replies", json={"replies": [{"text": "scripted one"}], "default": "always"})
        texts = [chat(c, "anthropic").json()["content"][0]["text"] for _ in range(2)]
        assert texts == ["scripted one", "always"]

        recorded = ctl.get("/requests").json()["requests"]
        assert len(recorded) == 4
        last = recorded[-1]
        assert last["method"] == "POST" and last["path"] == "/v1/messages"
        assert last["body"]["messages"][0]["content"][0]["text"] == USER_TEXT
        assert last["headers"]["anthropic-version"] == "2023-06-01"
        assert "x-api-key" not in last["headers"]

        assert ctl.post("/reset").json() == {"ok": True}
        assert ctl.get("/requests").json() == {"requests": []}
        assert ctl.get("/faults").json() == {"faults": {}, "remaining": None}
        reply = chat(c, "anthropic").json()
        assert reply["content"][0]["text"] == ECHO


# --------------------------------------------------------------------------- runner


def test_refused_port() -> None:
    with RefusedPort("openai") as refused:
        assert refused.base_url.endswith(f":{refused.port}/v1")
        with pytest.raises(httpx.ConnectError):
            httpx.Client(verify=False).get(refused.base_url + "/models", timeout=2)


async def test_async_context_manager_and_base_urls() -> None:
    async with FakeProvider("cohere", api_key=None, embedding_dim=4) as fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}"
        async with httpx.AsyncClient(base_url=fake.base_url, verify=False) as c:
            resp = await c.post("/v1/embed", json={"texts": ["x"], "model": "embed-v4.0",
                                                   "input_type": "search_query"})  # fmt: skip
        assert resp.status_code == 200  # no auth configured
        assert len(resp.json()["embeddings"][0]) == 4
    async with httpx.AsyncClient(verify=False) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(fake.origin + "/_fake/health", timeout=2)


def test_cli_serves_until_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "polymodal.testing.fake_provider", "--wire", "openai",
         "--port", "0", "--api-key", "sk-cli"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=20), "the CLI did not report ready"
        line = proc.stdout.readline()
        assert "ready" in line
        base_url = line.strip().rsplit("base_url=", 1)[1]
        assert base_url.endswith("/v1")
        with httpx.Client(verify=False) as c:
            resp = c.get(base_url + "/models", headers={"Authorization": "Bearer sk-cli"})
        assert resp.status_code == 200 and resp.json()["object"] == "list"
    finally:
        proc.terminate()
        proc.wait(10)
