"""OpenAI Chat Completions and Embeddings wire format.

Spoken by OpenAI itself and by DeepSeek, Mistral, Groq, Together, OpenRouter and
self-hosted vLLM, Ollama and llama.cpp servers: a base URL and a bearer key. The
canonical format *is* this one, so requests go out nearly as they came in and responses
are parsed only as far as checking their shape.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import orjson

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
)
from polymodal.domain.errors import ProviderError
from polymodal.providers import calls, errors, sse
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.http import UpstreamError
from polymodal.providers.registry import register

WIRE = "openai"
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


def _headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    return headers


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    message, code, type_ = "", "", ""
    try:
        error = orjson.loads(body).get("error") or {}
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = str(error.get("code") or "")
            type_ = str(error.get("type") or "")
        elif isinstance(error, str):
            message = error
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return errors.from_status(
        status,
        message or "no error message",
        provider=WIRE,
        headers=headers,
        context_too_long=status == 400 and code in _CONTEXT_CODES,
        content_filtered=status == 400 and (code in _FILTER_CODES or type_ in _FILTER_CODES),
    )


def _payload(deployment: Deployment, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": deployment.model, "messages": request.messages}
    payload.update(request.params)
    if stream:
        payload["stream"] = True
        # Always ask for usage: the ledger needs it even when the caller did not.
        payload["stream_options"] = {"include_usage": True}
    return payload


def _check_completion(data: Any) -> ChatCompletion:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise errors.malformed(WIRE, "completion")
    for choice in data["choices"]:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise errors.malformed(WIRE, "completion")
    return cast(ChatCompletion, data)


def _decode_base64_vector(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class OpenAIProvider:
    wire = WIRE

    def __init__(self, context: ProviderContext) -> None:
        self._http = context.http

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion:
        url = deployment.base_url.rstrip("/") + "/chat/completions"
        data = await calls.post_json(
            self._http,
            url,
            _payload(deployment, request, stream=False),
            _headers(deployment),
            deadlines,
            wire=WIRE,
            on_error=error_from_response,
            what="completion body",
        )
        return _check_completion(data)

    async def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        url = deployment.base_url.rstrip("/") + "/chat/completions"
        try:
            async with self._http.stream(
                url,
                orjson.dumps(_payload(deployment, request, stream=True)),
                _headers(deployment),
                connect_s=deadlines.connect_s,
                first_byte_s=deadlines.first_byte_s,
            ) as response:
                await calls.check_stream(response, error_from_response)
                done = False
                stream = sse.events(
                    response, provider=WIRE, first_s=deadlines.first_byte_s, idle_s=deadlines.idle_s
                )
                async for event in stream:
                    if event.data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(event.data)
                    except orjson.JSONDecodeError as e:
                        raise errors.malformed(WIRE, "stream chunk") from e
                    if not isinstance(chunk, dict):
                        raise errors.malformed(WIRE, "stream chunk")
                    if "error" in chunk:  # an in-band error event mid-stream
                        raise errors.from_status(502, str(chunk["error"])[:200], provider=WIRE)
                    if not isinstance(chunk.get("choices"), list):
                        raise errors.malformed(WIRE, "stream chunk")
                    yield cast(ChatChunk, chunk)
                if not done:
                    raise errors.truncated(WIRE)
        except UpstreamError as e:
            raise errors.from_transport(e, provider=WIRE) from e

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult:
        url = deployment.base_url.rstrip("/") + "/embeddings"
        payload: dict[str, Any] = {
            "model": deployment.model,
            "input": request.inputs,
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            payload["dimensions"] = request.dimensions
        data = await calls.post_json(
            self._http,
            url,
            payload,
            _headers(deployment),
            deadlines,
            wire=WIRE,
            on_error=error_from_response,
            what="embeddings body",
        )
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [
                _decode_base64_vector(v) if isinstance(v := item["embedding"], str) else v
                for item in items
            ]
            tokens = int((data.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise errors.malformed(WIRE, "embeddings body") from e
        if len(vectors) != len(request.inputs):
            raise errors.malformed(WIRE, "embeddings body")
        return EmbeddingResult(vectors=vectors, model=deployment.model, prompt_tokens=tokens)

    async def aclose(self) -> None:
        return None


@register(WIRE)
def _factory(context: ProviderContext) -> OpenAIProvider:
    return OpenAIProvider(context)
