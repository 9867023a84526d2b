"""Cohere embed v3 wire format (``POST {base_url}/v1/embed``, bearer key).

Embeddings only: Cohere chat is not wired; chat calls are refused. Queries and
documents are embedded differently (``input_type``), which retrieval quality depends on.
"""

from __future__ import annotations

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
from polymodal.domain.errors import BadRequest, ProviderError
from polymodal.providers import calls, errors
from polymodal.providers.base import Deadlines, ProviderContext
from polymodal.providers.registry import register

WIRE = "cohere"
# /v1/embed takes at most this many texts per call.
EMBED_BATCH_LIMIT = 96
_INPUT_TYPES = {"query": "search_query", "document": "search_document"}
_EMBEDDINGS_ONLY = "cohere deployments serve embeddings only"


def _headers(deployment: Deployment) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if deployment.api_key:
        headers["authorization"] = f"Bearer {deployment.api_key}"
    return headers


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    try:
        data = orjson.loads(body)
        message = str(data.get("message") or "") if isinstance(data, dict) else ""
    except orjson.JSONDecodeError:
        message = body[:200].decode("utf-8", "replace")
    return errors.from_status(status, message or "no error message", provider=WIRE, headers=headers)


class CohereProvider:
    wire = WIRE

    def __init__(self, context: ProviderContext) -> None:
        self._http = context.http

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion:
        raise BadRequest(_EMBEDDINGS_ONLY, provider=WIRE)

    async def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        raise BadRequest(_EMBEDDINGS_ONLY, provider=WIRE)
        yield  # unreachable; makes this an async generator like every adapter's stream

    async def _embed_batch(
        self, deployment: Deployment, payload: dict[str, Any], deadlines: Deadlines
    ) -> tuple[list[list[float]], int]:
        data = await calls.post_json(
            self._http,
            deployment.base_url.rstrip("/") + "/v1/embed",
            payload,
            _headers(deployment),
            deadlines,
            wire=WIRE,
            on_error=error_from_response,
            what="embed body",
        )
        try:
            vectors = [[float(v) for v in vector] for vector in data["embeddings"]["float"]]
            billed = (data.get("meta") or {}).get("billed_units") or {}
            tokens = int(billed.get("input_tokens") or 0)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise errors.malformed(WIRE, "embed body") from e
        if len(vectors) != len(payload["texts"]):
            raise errors.malformed(WIRE, "embed body")
        return vectors, tokens

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult:
        if request.dimensions is not None and request.dimensions != deployment.dimensions:
            # v3 vectors have one fixed size and are not meant to be truncated.
            raise BadRequest(
                f"dimensions: {deployment.model} returns vectors of one fixed size"
                + (f" ({deployment.dimensions})" if deployment.dimensions else ""),
                provider=WIRE,
            )
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(request.inputs), EMBED_BATCH_LIMIT):
            payload = {
                "model": deployment.model,
                "texts": request.inputs[start : start + EMBED_BATCH_LIMIT],
                "input_type": _INPUT_TYPES[request.input_type],
                "embedding_types": ["float"],
            }
            batch, billed = await self._embed_batch(deployment, payload, deadlines)
            vectors.extend(batch)
            tokens += billed
        return EmbeddingResult(vectors=vectors, model=deployment.model, prompt_tokens=tokens)

    async def aclose(self) -> None:
        return None


@register(WIRE)
def _factory(context: ProviderContext) -> CohereProvider:
    return CohereProvider(context)
