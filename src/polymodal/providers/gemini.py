"""Google Gemini wire format (Generative Language API ``v1beta``).

Chat is ``models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``,
translated by `gemini_translate`; embeddings are ``:embedContent`` (one text) and
``:batchEmbedContents`` (several). Authenticated with the ``x-goog-api-key`` header.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
)
from polymodal.domain.errors import AuthFailed, BadRequest, ProviderError
from polymodal.providers import calls, errors, sse
from polymodal.providers import gemini_translate as translate
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.http import UpstreamError
from polymodal.providers.registry import register

WIRE = translate.WIRE
API_VERSION = "v1beta"
# batchEmbedContents takes at most this many requests per call.
EMBED_BATCH_LIMIT = 100
_TASK_TYPES = {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"}
# Gemini has no error code for an over-long prompt, only an INVALID_ARGUMENT reading
# "The input token count (1234567) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_TOO_LONG = re.compile(
    r"token count.*exceeds|exceeds the maximum number of tokens", re.IGNORECASE
)
_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if deployment.api_key:
        headers["x-goog-api-key"] = deployment.api_key
    return headers


def _url(deployment: Deployment, method: str) -> str:
    model = deployment.model.removeprefix("models/")
    return f"{deployment.base_url.rstrip('/')}/{API_VERSION}/models/{model}:{method}"


def _error(status: int, error: dict[str, Any], headers: Mapping[str, str]) -> ProviderError:
    message = str(error.get("message") or error.get("status") or "no error message")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        # Gemini answers a wrong key with 400 INVALID_ARGUMENT: the deployment is at fault.
        return AuthFailed(
            f"{WIRE} returned {status}: {message}"[:500], provider=WIRE, upstream_status=status
        )
    if "retry-after" not in headers:
        for detail in details:  # google.rpc.RetryInfo, e.g. {"retryDelay": "13s"}
            match = _RETRY_DELAY.match(str(detail.get("retryDelay") or ""))
            if match:
                headers = {"retry-after": match.group(1)}
                break
    return errors.from_status(
        status,
        message,
        provider=WIRE,
        headers=headers,
        context_too_long=status == 400 and bool(_CONTEXT_TOO_LONG.search(message)),
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    try:
        data = orjson.loads(body)
        if isinstance(data, list) and data:  # the JSON-array stream wraps errors too
            data = data[0]
        error = data.get("error") if isinstance(data, dict) else None
    except orjson.JSONDecodeError:
        error = None
    if not isinstance(error, dict):
        error = {"message": body[:200].decode("utf-8", "replace")}
    return _error(status, error, headers)


def _stream_error(error: Any) -> ProviderError:
    """An in-stream ``{"error": {...}}`` event; its ``code`` is the HTTP status."""
    if not isinstance(error, dict):
        return errors.malformed(WIRE, "stream error event")
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return _error(status, error, {})


class GeminiProvider:
    wire = WIRE

    def __init__(self, context: ProviderContext) -> None:
        self._http = context.http

    async def _post(
        self, deployment: Deployment, method: str, payload: dict[str, Any], deadlines: Deadlines
    ) -> Any:
        """POST a JSON request and return the parsed 200 body."""
        return await calls.post_json(
            self._http,
            _url(deployment, method),
            payload,
            _headers(deployment),
            deadlines,
            wire=WIRE,
            on_error=error_from_response,
            what=f"{method} body",
        )

    @staticmethod
    def _check_chat(deployment: Deployment) -> None:
        if deployment.is_embedding and not deployment.is_chat:
            raise BadRequest(
                f"gemini deployment {deployment.id!r} serves embeddings only, not chat",
                provider=WIRE,
            )

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion:
        self._check_chat(deployment)
        translated = translate.request_body(deployment, request)
        data = await self._post(deployment, "generateContent", translated.body, deadlines)
        return translate.completion(
            data, model=deployment.model, single_tool_call=translated.single_tool_call
        )

    async def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        self._check_chat(deployment)
        translated = translate.request_body(deployment, request)
        try:
            async with self._http.stream(
                _url(deployment, "streamGenerateContent") + "?alt=sse",
                orjson.dumps(translated.body),
                _headers(deployment),
                connect_s=deadlines.connect_s,
                first_byte_s=deadlines.first_byte_s,
            ) as response:
                await calls.check_stream(response, error_from_response)
                state = translate.StreamTranslator(
                    model=deployment.model, single_tool_call=translated.single_tool_call
                )
                events = sse.events(
                    response, provider=WIRE, first_s=deadlines.first_byte_s, idle_s=deadlines.idle_s
                )
                async for event in events:
                    try:
                        data = orjson.loads(event.data)
                    except orjson.JSONDecodeError as e:
                        raise errors.malformed(WIRE, "stream event") from e
                    if not isinstance(data, dict):
                        raise errors.malformed(WIRE, "stream event")
                    if "error" in data:
                        raise _stream_error(data["error"])
                    for chunk in state.feed(data):
                        yield chunk
                # The stream has no terminator: it ends when the connection closes.
                for chunk in state.finish():
                    yield chunk
        except UpstreamError as e:
            raise errors.from_transport(e, provider=WIRE) from e

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult:
        if deployment.is_chat and not deployment.is_embedding:
            raise BadRequest(
                f"gemini deployment {deployment.id!r} serves chat only, not embeddings",
                provider=WIRE,
            )
        model = "models/" + deployment.model.removeprefix("models/")

        def one(text: str) -> dict[str, Any]:
            item: dict[str, Any] = {
                "model": model,
                "content": {"parts": [{"text": text}]},
                "taskType": _TASK_TYPES[request.input_type],
            }
            if request.dimensions is not None:
                item["outputDimensionality"] = request.dimensions
            return item

        inputs = request.inputs
        vectors: list[list[float]] = []
        try:
            if len(inputs) == 1:
                data = await self._post(deployment, "embedContent", one(inputs[0]), deadlines)
                vectors.append([float(v) for v in data["embedding"]["values"]])
            else:
                for start in range(0, len(inputs), EMBED_BATCH_LIMIT):
                    batch = inputs[start : start + EMBED_BATCH_LIMIT]
                    payload = {"requests": [one(text) for text in batch]}
                    data = await self._post(deployment, "batchEmbedContents", payload, deadlines)
                    items = data["embeddings"]
                    if len(items) != len(batch):
                        raise errors.malformed(WIRE, "batchEmbedContents body")
                    vectors.extend([float(v) for v in item["values"]] for item in items)
        except (KeyError, TypeError, ValueError) as e:
            raise errors.malformed(WIRE, "embeddings body") from e
        # Gemini's embedding endpoints report no token counts.
        return EmbeddingResult(vectors=vectors, model=deployment.model, prompt_tokens=0)

    async def aclose(self) -> None:
        return None


@register(WIRE)
def _factory(context: ProviderContext) -> GeminiProvider:
    return GeminiProvider(context)
