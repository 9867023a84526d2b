"""The gateway bound to one API caller, as the services that call models see it (the
template service's and the chatbots' ``ChatCaller``): each call a usage row of the given
feature, and the latest admission's rate-limit state kept for the response's
``x-ratelimit-*`` headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from polymodal.api.state import AppState
from polymodal.domain.chat import ChatChunk, ChatCompletion, ChatRequest, EmbeddingRequest
from polymodal.domain.economics import LimitNote
from polymodal.domain.principal import Principal
from polymodal.gateway.service import CallContext, Gateway, Routed
from polymodal.tenancy.economics import rate_headers

TIER_HEADER = "x-polymodal-tier"


@dataclass(frozen=True, slots=True)
class GatewayCaller:
    gateway: Gateway
    principal: Principal
    request_id: str
    tier_header: str | None = None
    limits: LimitNote = field(default_factory=LimitNote)
    embedding_model: str = ""  # what ``embed_query`` embeds with (the chatbots' cache)

    @classmethod
    def of(cls, request: Request, principal: Principal, state: AppState) -> GatewayCaller:
        return cls(
            gateway=state.gateway,
            principal=principal,
            request_id=request.scope.get("state", {}).get("request_id", ""),
            tier_header=request.headers.get(TIER_HEADER),
            embedding_model=state.settings.semantic_cache_embedding_model,
        )

    def _ctx(self, feature: str) -> CallContext:
        return CallContext(
            self.principal, feature, self.request_id, self.tier_header, limits=self.limits
        )

    async def chat(self, feature: str, request: ChatRequest) -> tuple[ChatCompletion, Routed]:
        return await self.gateway.chat(self._ctx(feature), request)

    async def chat_stream(
        self, feature: str, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], Routed]:
        return await self.gateway.chat_stream(self._ctx(feature), request)

    async def embed_query(self, text: str, *, feature: str) -> list[float]:
        request = EmbeddingRequest(model=self.embedding_model, inputs=[text], input_type="query")
        result, _ = await self.gateway.embed(self._ctx(feature), request)
        return result.vectors[0]

    def limit_headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` of the latest admission (none when limits are off)."""
        snapshot = self.limits.snapshot
        return rate_headers(snapshot) if snapshot is not None else {}
