"""Helpers of the provider adapter tests: deployments, deadlines, stream reassembly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from typing import Any

from polymodal.domain.catalog import Deployment, Price
from polymodal.domain.chat import ChatChunk
from polymodal.providers.base import Deadlines

# Deadlines small enough that a hung or stalled fake fails a test in well under a second.
FAST = Deadlines(connect_s=1.0, first_byte_s=0.3, idle_s=0.2, total_s=0.4)
RELAXED = Deadlines(connect_s=2.0, first_byte_s=5.0, idle_s=5.0, total_s=5.0)


def make_deployment(
    provider: str, model: str, base_url: str, capabilities: Iterable[str], **extra: Any
) -> Deployment:
    return Deployment(
        id=f"{provider}-test",
        provider=provider,
        model=model,
        base_url=base_url,
        price=Price(Decimal("1"), Decimal("2")),
        context_window=128_000,
        capabilities=frozenset(capabilities),
        **extra,
    )


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[ChatChunk], index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


def streamed_tool_calls(chunks: list[ChatChunk]) -> list[dict[str, Any]]:
    """Tool calls reassembled from their deltas, as an OpenAI client would."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(delta["index"], {"name": "", "arguments": ""})
                if "id" in delta:
                    call["id"] = delta["id"]
                function = delta.get("function") or {}
                call["name"] += function.get("name", "")
                call["arguments"] += function.get("arguments", "")
    return [calls[i] for i in sorted(calls)]
