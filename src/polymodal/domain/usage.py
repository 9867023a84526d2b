"""One model call as the usage ledger records it, and where such records go."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol


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
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class UsageSink(Protocol):
    def record(self, row: UsageRecord) -> None:
        """Queue a row; must never block the caller or raise."""
        ...
