"""One model call as the usage ledger records it, where such records go, and the feature
tags that make per-feature cost real (DESIGN.md section 4)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from polymodal.domain import ids

# A feature tag is ``api`` or ``<kind>:<id>``; only the kind goes into metric labels,
# so this set is what bounds their cardinality. ``kb:<id>`` is knowledge-base work
# (ingestion and search embeddings) outside any chatbot.
FEATURE_KINDS = frozenset({"api", "template", "chatbot", "pipeline", "media", "kb"})
OTHER = "other"


def feature_kind(feature: str) -> str:
    """The bounded part of a feature tag: ``template:blog-post`` -> ``template``."""
    kind = feature.split(":", 1)[0]
    return kind if kind in FEATURE_KINDS else OTHER


def feature_tag(kind: str, ident: str = "") -> str:
    """Build a feature tag (``feature_tag("chatbot", id)`` -> ``chatbot:<id>``)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}")
    if kind == "api":
        return "api"
    if not ident or len(kind) + 1 + len(ident) > 100:
        raise ValueError("a feature id must be 1 to ~90 characters")
    return f"{kind}:{ident}"


@dataclass(slots=True)
class UsageRecord:
    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    key_id: uuid.UUID | None
    request_id: str
    feature: str
    kind: str
    deployment: str
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    cost: Decimal
    latency_ms: float
    ttfb_ms: float | None
    stream: bool
    status: str
    tier: str | None = None
    task: str | None = None
    attempts: int = 1
    cache_hit: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The ledger's idempotency key: a replayed spool never counts a call twice.
    event_id: uuid.UUID = field(default_factory=ids.uuid4)


class UsageSink(Protocol):
    def record(self, row: UsageRecord) -> None:
        """Queue a row; must never block the caller or raise."""
        ...
