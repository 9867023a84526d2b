"""Anthropic Messages wire format (``POST {base_url}/v1/messages``).

Requests and replies are translated to and from the canonical OpenAI format by
`anthropic_translate`; this module does the HTTP, the stream framing and the errors.
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
from polymodal.providers import anthropic_translate as translate
from polymodal.providers import calls, errors, sse
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.http import UpstreamError
from polymodal.providers.registry import register

WIRE = translate.WIRE
API_VERSION = "2023-06-01"
# Error ``type`` -> the HTTP status Anthropic sends it with; in-stream ``error`` events
# carry only the type.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Anthropic has no error code for an over-long prompt, only these messages:
# "prompt is too long: 208310 tokens > 200000 maximum" and
# "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000".
_CONTEXT_TOO_LONG = re.compile(r"prompt is too long|exceed context limit", re.IGNORECASE)


def _headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
    if deployment.api_key:
        headers["x-api-key"] = deployment.api_key
    return headers


def _error(
    status: int, type_: str, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    if type_ == "billing_error" or status == 402:
        # Out of credit: the deployment is misconfigured, not the request.
        return AuthFailed(
            f"{WIRE} returned {status}: {message}"[:500], provider=WIRE, upstream_status=status
        )
    return errors.from_status(
        status,
        message or type_ or "no error message",
        provider=WIRE,
        headers=headers,
        context_too_long=status == 400 and bool(_CONTEXT_TOO_LONG.search(message)),
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    type_, message = "", ""
    try:
        error = orjson.loads(body).get("error") or {}
        if isinstance(error, dict):
            type_ = str(error.get("type") or "")
            message = str(error.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return _error(status, type_, message, headers)


def _stream_error(data: dict[str, Any]) -> ProviderError:
    """An in-stream ``error`` event, e.g. ``overloaded_error`` mid-answer."""
    error = data.get("error")
    type_ = str(error.get("type") or "") if isinstance(error, dict) else ""
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    return _error(_TYPE_STATUS.get(type_, 500), type_, message)


class AnthropicProvider:
    wire = WIRE

    def __init__(self, context: ProviderContext) -> None:
        self._http = context.http

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion:
        translated = translate.request_body(deployment, request, stream=False)
        url = deployment.base_url.rstrip("/") + "/v1/messages"
        data = await calls.post_json(
            self._http,
            url,
            translated.body,
            _headers(deployment),
            deadlines,
            wire=WIRE,
            on_error=error_from_response,
            what="message body",
        )
        return translate.completion(data, json_mode=translated.json_mode, model=deployment.model)

    async def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        translated = translate.request_body(deployment, request, stream=True)
        url = deployment.base_url.rstrip("/") + "/v1/messages"
        try:
            async with self._http.stream(
                url,
                orjson.dumps(translated.body),
                _headers(deployment),
                connect_s=deadlines.connect_s,
                first_byte_s=deadlines.first_byte_s,
            ) as response:
                await calls.check_stream(response, error_from_response)
                state = translate.StreamTranslator(
                    model=deployment.model, json_mode=translated.json_mode
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
                    kind = str(data.get("type") or event.event)
                    if kind == "error":
                        raise _stream_error(data)
                    for chunk in state.feed(kind, data):
                        yield chunk
                    if state.done:
                        break
                if not state.done:
                    raise errors.truncated(WIRE)
        except UpstreamError as e:
            raise errors.from_transport(e, provider=WIRE) from e

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult:
        raise BadRequest("anthropic deployments do not serve embeddings", provider=WIRE)

    async def aclose(self) -> None:
        return None


@register(WIRE)
def _factory(context: ProviderContext) -> AnthropicProvider:
    return AnthropicProvider(context)
