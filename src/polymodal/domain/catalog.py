"""Deployments: a model at a provider, with its price, window and capabilities."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        return (self.input_per_mtok * tokens_in + self.output_per_mtok * tokens_out) / MTOK


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a client may name in ``model``: ``id``, or the provider's ``model`` name."""

    id: str
    provider: str  # the wire format: openai | anthropic | gemini | cohere | local
    model: str
    base_url: str
    price: Price
    context_window: int
    capabilities: frozenset[str]
    api_key: str | None = None
    max_output_tokens: int | None = None
    dimensions: int | None = None  # embedding deployments
    unavailable_reason: str | None = None  # e.g. the key variable is unset
    http2: bool = False  # call it over HTTP/2

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def is_embedding(self) -> bool:
        return "embeddings" in self.capabilities

    @property
    def is_chat(self) -> bool:
        return "chat" in self.capabilities
