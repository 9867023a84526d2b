"""What every provider adapter implements, and what the composition root hands it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
)
from polymodal.providers.http import Upstream


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Per-attempt limits (the executor of the router issue makes first_byte adaptive)."""

    connect_s: float = 2.0
    first_byte_s: float = 30.0  # until response headers (and, streaming, the first chunk)
    idle_s: float = 15.0  # between stream chunks
    total_s: float = 120.0


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """Shared by every adapter in a process: one pooled HTTP client, local-model limits."""

    http: Upstream
    local_threads: int = 1
    local_max_concurrency: int = 1
    local_context_size: int = 4096


class Provider(Protocol):
    """One wire format. Methods raise `domain.errors.ProviderError` subclasses only."""

    wire: str

    async def complete(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> ChatCompletion: ...

    def stream(
        self, deployment: Deployment, request: ChatRequest, deadlines: Deadlines
    ) -> AsyncIterator[ChatChunk]:
        """Chunks in OpenAI's format; the last one carries ``usage``. A stream that ends
        without the wire's terminator raises `Unavailable` (never a clean finish)."""
        ...

    async def embed(
        self, deployment: Deployment, request: EmbeddingRequest, deadlines: Deadlines
    ) -> EmbeddingResult: ...

    async def aclose(self) -> None: ...
