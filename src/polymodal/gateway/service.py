"""The gateway: resolve the deployment, check the request fits it, call the provider,
account for the call. Every model call in polymodal goes through here.

The router issue replaces `_choose` with classification, policy and failover; the
checks, the accounting and the stream handling stay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
    Message,
)
from polymodal.domain.errors import (
    AuthFailed,
    InvalidRequest,
    ProviderError,
    ServiceUnavailable,
)
from polymodal.domain.principal import Principal
from polymodal.domain.usage import UsageRecord, UsageSink
from polymodal.gateway.catalog import Catalog
from polymodal.providers.base import Deadlines, Provider

AUTO = "auto"
# Tokens a chat format adds per message (role markers, separators): a safe over-estimate.
PER_MESSAGE_OVERHEAD = 4


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and what for: every usage row carries it."""

    principal: Principal
    feature: str = "api"
    request_id: str = ""


def _text_of(message: Message) -> tuple[str, bool]:
    """The message's text and whether it carries an image."""
    content = message.get("content")
    if content is None:
        text = ""
        has_image = False
    elif isinstance(content, str):
        text, has_image = content, False
    else:
        text = " ".join(p["text"] for p in content if p["type"] == "text")
        has_image = any(p["type"] == "image_url" for p in content)
    for call in message.get("tool_calls") or []:
        text += " " + call["function"]["name"] + " " + call["function"]["arguments"]
    return text, has_image


class Gateway:
    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        recorder: UsageSink,
        deadlines: Deadlines,
        count_tokens: Callable[[str], int],
        default_model: str,
        default_embedding_model: str,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.catalog = catalog
        self._providers = providers
        self._recorder = recorder
        self._deadlines = deadlines
        self._count = count_tokens
        self._default_model = default_model
        self._default_embedding = default_embedding_model
        self._clock = clock

    # --- lookups ------------------------------------------------------------------------

    def models(self) -> list[Deployment]:
        return list(self.catalog)

    def _choose(self, name: str, *, kind: str) -> Deployment:
        if name == AUTO:
            name = self._default_model if kind == "chat" else self._default_embedding
        deployment = self.catalog.resolve(name, kind=kind)
        if not deployment.available:
            raise ServiceUnavailable(
                f"The model '{deployment.id}' is not available on this server: "
                f"{deployment.unavailable_reason}.",
                code="model_unavailable",
            )
        return deployment

    # --- checks before any upstream call (nothing is billed for these) -------------------

    def estimate_prompt_tokens(self, messages: list[Message]) -> tuple[int, bool]:
        total, images = 0, False
        for message in messages:
            text, has_image = _text_of(message)
            total += self._count(text) + PER_MESSAGE_OVERHEAD
            images = images or has_image
        return total, images

    def _check_chat(self, d: Deployment, request: ChatRequest) -> int:
        params = request.params
        supported: frozenset[str] | None = getattr(
            self._providers[d.provider], "supported_params", None
        )
        if supported is not None and (unsupported := sorted(set(params) - supported)):
            raise InvalidRequest(
                f"{unsupported[0]}: not supported by the model '{d.id}'.",
                code="unsupported_parameter",
            )
        if params.get("tools") and "tools" not in d.capabilities:
            raise InvalidRequest(
                f"tools: the model '{d.id}' does not support tool calling.",
                code="unsupported_parameter",
            )
        fmt = (params.get("response_format") or {}).get("type")
        if fmt in ("json_object", "json_schema") and "json" not in d.capabilities:
            raise InvalidRequest(
                f"response_format: the model '{d.id}' does not support {fmt}.",
                code="unsupported_parameter",
            )
        prompt_tokens, has_images = self.estimate_prompt_tokens(request.messages)
        if has_images and "vision" not in d.capabilities:
            raise InvalidRequest(
                f"messages: the model '{d.id}' does not accept images.",
                code="unsupported_parameter",
            )
        wanted = request.max_output_tokens
        if wanted is not None and d.max_output_tokens is not None and wanted > d.max_output_tokens:
            raise InvalidRequest(
                f"max_tokens: {wanted} exceeds the {d.max_output_tokens} output tokens "
                f"'{d.id}' can produce.",
                code="max_tokens_too_large",
            )
        if prompt_tokens + (wanted or 0) > d.context_window:
            raise InvalidRequest(
                f"messages: about {prompt_tokens} tokens"
                + (f" plus max_tokens {wanted}" if wanted else "")
                + f" do not fit the {d.context_window}-token context window of '{d.id}'.",
                code="context_length_exceeded",
            )
        return prompt_tokens

    # --- calls ------------------------------------------------------------------------------

    def _cost(self, d: Deployment, tokens_in: int, tokens_out: int) -> Decimal:
        return d.price.cost(tokens_in, tokens_out)

    def _record(
        self,
        ctx: CallContext,
        d: Deployment,
        *,
        kind: str,
        tokens_in: int,
        tokens_out: int,
        started: float,
        ttfb: float | None,
        stream: bool,
        status: str,
    ) -> None:
        p = ctx.principal
        self._recorder.record(
            UsageRecord(
                tenant_id=p.tenant_id,
                user_id=p.user_id,
                key_id=p.key_id,
                request_id=ctx.request_id,
                feature=ctx.feature,
                kind=kind,
                deployment=d.id,
                provider=d.provider,
                model=d.model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=self._cost(d, tokens_in, tokens_out),
                latency_ms=(self._clock() - started) * 1000,
                ttfb_ms=None if ttfb is None else (ttfb - started) * 1000,
                stream=stream,
                status=status,
            )
        )

    def _public(self, d: Deployment, error: ProviderError) -> ProviderError:
        """The error as the client may see it: named deployment, no credentials."""
        if isinstance(error, AuthFailed):
            error.message = (
                f"The provider behind '{d.id}' rejected this server's credentials; "
                "an operator must fix its API key."
            )
        else:
            message = error.message
            if d.api_key:
                message = message.replace(d.api_key, "***")
            error.message = f"'{d.id}': {message}"
        return error

    async def chat(
        self, ctx: CallContext, request: ChatRequest
    ) -> tuple[ChatCompletion, Deployment]:
        d = self._choose(request.model, kind="chat")
        prompt_estimate = self._check_chat(d, request)
        provider = self._providers[d.provider]
        started = self._clock()
        try:
            result = await provider.complete(d, request, self._deadlines)
        except ProviderError as e:
            self._record(
                ctx,
                d,
                kind="chat",
                tokens_in=0,
                tokens_out=0,
                started=started,
                ttfb=None,
                stream=False,
                status=e.code,
            )
            raise self._public(d, e) from e
        usage = result.get("usage")
        if usage:
            tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
        else:
            tokens_in = prompt_estimate
            tokens_out = sum(
                self._count(c["message"].get("content") or "") for c in result["choices"]
            )
        self._record(
            ctx,
            d,
            kind="chat",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            started=started,
            ttfb=None,
            stream=False,
            status="ok",
        )
        return result, d

    async def chat_stream(
        self, ctx: CallContext, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], Deployment]:
        """Start a stream. Failures before the first chunk raise here, so the API can still
        answer with a proper HTTP error; later failures raise from the iterator."""
        d = self._choose(request.model, kind="chat")
        prompt_estimate = self._check_chat(d, request)
        provider = self._providers[d.provider]
        started = self._clock()
        upstream = provider.stream(d, request, self._deadlines)
        try:
            first = await anext(upstream)
        except StopAsyncIteration:
            first = None
        except ProviderError as e:
            self._record(
                ctx,
                d,
                kind="chat",
                tokens_in=0,
                tokens_out=0,
                started=started,
                ttfb=None,
                stream=True,
                status=e.code,
            )
            raise self._public(d, e) from e
        ttfb = self._clock()
        return self._relay(ctx, d, upstream, first, started, ttfb, prompt_estimate), d

    async def _relay(
        self,
        ctx: CallContext,
        d: Deployment,
        upstream: AsyncIterator[ChatChunk],
        first: ChatChunk | None,
        started: float,
        ttfb: float,
        prompt_estimate: int,
    ) -> AsyncIterator[ChatChunk]:
        usage: dict[str, Any] | None = None
        text_parts: list[str] = []
        status = "client_closed"
        try:
            chunk = first
            while chunk is not None:
                if chunk.get("usage"):
                    usage = dict(chunk["usage"] or {})
                for choice in chunk["choices"]:
                    if content := choice["delta"].get("content"):
                        text_parts.append(content)
                yield chunk
                try:
                    chunk = await anext(upstream)
                except StopAsyncIteration:
                    chunk = None
            status = "ok"
        except ProviderError as e:
            status = e.code
            raise self._public(d, e) from e
        finally:
            if usage:
                tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
            else:
                tokens_in, tokens_out = prompt_estimate, self._count("".join(text_parts))
            self._record(
                ctx,
                d,
                kind="chat",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                started=started,
                ttfb=ttfb,
                stream=True,
                status=status,
            )
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()

    async def embed(
        self, ctx: CallContext, request: EmbeddingRequest
    ) -> tuple[EmbeddingResult, Deployment]:
        d = self._choose(request.model, kind="embeddings")
        if not request.inputs:
            raise InvalidRequest("input: must not be empty.", code="empty_input")
        too_long = [
            i for i, text in enumerate(request.inputs) if self._count(text) > d.context_window * 4
        ]
        if too_long:
            raise InvalidRequest(
                f"input[{too_long[0]}]: far longer than the {d.context_window}-token input "
                f"of '{d.id}'.",
                code="context_length_exceeded",
            )
        provider = self._providers[d.provider]
        started = self._clock()
        try:
            result = await provider.embed(d, request, self._deadlines)
        except ProviderError as e:
            self._record(
                ctx,
                d,
                kind="embeddings",
                tokens_in=0,
                tokens_out=0,
                started=started,
                ttfb=None,
                stream=False,
                status=e.code,
            )
            raise self._public(d, e) from e
        tokens = result.prompt_tokens or sum(self._count(t) for t in request.inputs)
        self._record(
            ctx,
            d,
            kind="embeddings",
            tokens_in=tokens,
            tokens_out=0,
            started=started,
            ttfb=None,
            stream=False,
            status="ok",
        )
        return result, d
