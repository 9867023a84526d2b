"""OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.

Any OpenAI client (the `openai` SDK, LangChain's `ChatOpenAI`, curl) works unchanged by
pointing its base URL at polymodal and using a polymodal API key.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from polymodal.api.body import body_openapi, parse
from polymodal.api.deps import CurrentPrincipal, State, authenticate
from polymodal.api.deps import state_of as app_state_of
from polymodal.api.errors import error_body
from polymodal.api.responses import JSONResponse
from polymodal.api.v1.callers import TIER_HEADER
from polymodal.domain.chat import (
    COMMON_PARAMS,
    ChatChunk,
    ChatRequest,
    EmbeddingRequest,
    Message,
    ResponseFormat,
    Tool,
)
from polymodal.domain.economics import LimitNote
from polymodal.domain.errors import InvalidRequest, PolymodalError
from polymodal.domain.principal import Principal
from polymodal.gateway.service import CallContext, Routed
from polymodal.tenancy.economics import rate_headers

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Endpoints served by api.middleware.HotRoutes: each takes a bare Request, no dependencies.
HOT_PATHS = frozenset({"/v1/chat/completions", "/v1/embeddings"})


def hot_routes() -> list[APIRoute]:
    """This router's POST routes that `HotRoutes` may call directly."""
    return [
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path in HOT_PATHS and "POST" in (r.methods or ())
    ]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The OpenAI Chat Completions request. Unknown fields are kept and passed to providers
    that accept them; a provider that cannot honour one refuses the request (400)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1, le=16)
    user: str | None = Field(default=None, max_length=256)
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    fallbacks: list[str] | None = Field(
        default=None,
        max_length=10,
        description="Deployments to try, in order, when `model` fails (LiteLLM's field name).",
    )


def to_chat_request(body: ChatCompletionIn) -> ChatRequest:
    data = body.model_dump(exclude_unset=True, exclude_none=True)
    params = {k: data[k] for k in COMMON_PARAMS if k in data}
    params.update(body.model_extra or {})
    if body.fallbacks is not None:
        params["fallbacks"] = list(body.fallbacks)
    if isinstance(params.get("stop"), str):
        params["stop"] = [params["stop"]]
    return ChatRequest(
        model=body.model,
        messages=data["messages"],
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        params=params,
    )


def _route_headers(routed: Routed) -> dict[str, str]:
    d = routed.trace.deployment
    return {"x-polymodal-deployment": d.id if d else "", "x-polymodal-route": routed.header()}


def _context(request: Request, principal: Principal, feature: str = "api") -> CallContext:
    return CallContext(
        principal,
        feature,
        request.scope.get("state", {}).get("request_id", ""),
        tier_header=request.headers.get(TIER_HEADER),
        limits=LimitNote(),
    )


def _limit_headers(ctx: CallContext) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers (none when limits are off)."""
    note = ctx.limits
    return rate_headers(note.snapshot) if note is not None and note.snapshot else {}


async def _sse(stream: AsyncIterator[ChatChunk], include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's SSE framing. A failure after the first byte ends with an in-band error
    event and no ``[DONE]``: a broken stream never looks like a clean finish."""
    try:
        async for chunk in stream:
            if not include_usage:
                if not chunk["choices"]:
                    continue  # the usage-only chunk the caller did not ask for
                chunk.pop("usage", None)
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except PolymodalError as e:
        yield b"data: " + orjson.dumps(error_body(e.type, e.message, e.code)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


CHAT_BODY = TypeAdapter(ChatCompletionIn)


@router.post("/chat/completions", response_model=None, openapi_extra=body_openapi(ChatCompletionIn))
async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
    """Create a chat completion (streaming with `stream: true`)."""
    state = app_state_of(request)
    principal = await authenticate(request, state)
    chat = to_chat_request(await parse(request, CHAT_BODY))
    ctx = _context(request, principal)
    if chat.stream:
        stream, routed = await state.gateway.chat_stream(ctx, chat)
        return StreamingResponse(
            _sse(stream, chat.include_usage),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **_route_headers(routed), **_limit_headers(ctx)},
        )
    result, routed = await state.gateway.chat(ctx, chat)
    return JSONResponse(result, headers={**_route_headers(routed), **_limit_headers(ctx)})


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)
    input_type: Literal["query", "document"] = Field(
        default="document",
        description="polymodal extension: embed for search queries or for documents.",
    )


def _texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise InvalidRequest(
        "input: token-array input is not supported; send text.", code="unsupported_input"
    )


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


EMBEDDINGS_BODY = TypeAdapter(EmbeddingsIn)


@router.post("/embeddings", openapi_extra=body_openapi(EmbeddingsIn))
async def embeddings(request: Request) -> JSONResponse:
    """Create embeddings (`float` or `base64` encoded, as OpenAI's SDK asks)."""
    state = app_state_of(request)
    principal = await authenticate(request, state)
    body = await parse(request, EMBEDDINGS_BODY)
    req = EmbeddingRequest(
        model=body.model,
        inputs=_texts(body.input),
        dimensions=body.dimensions,
        input_type=body.input_type,
    )
    ctx = _context(request, principal)
    result, deployment = await state.gateway.embed(ctx, req)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(result.vectors)
            ],
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        },
        headers={"x-polymodal-deployment": deployment.id, **_limit_headers(ctx)},
    )


@router.get("/models")
async def list_models(principal: CurrentPrincipal, state: State) -> JSONResponse:
    """The deployments this tenant can name in `model`, with availability and price."""
    created = int(time.time())
    data = [
        {
            "id": d.id,
            "object": "model",
            "created": created,
            "owned_by": d.provider,
            "polymodal": {
                "model": d.model,
                "provider": d.provider,
                "available": d.available,
                "unavailable_reason": d.unavailable_reason,
                "capabilities": sorted(d.capabilities),
                "context_window": d.context_window,
                "price": {
                    "input_per_mtok": str(d.price.input_per_mtok),
                    "output_per_mtok": str(d.price.output_per_mtok),
                },
            },
        }
        for d in state.gateway.models()
    ]
    return JSONResponse({"object": "list", "data": data})
