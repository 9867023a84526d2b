"""Tables of rate limits and budgets (migration 0006).

Definitions live here; the live counters (requests and tokens per minute, the month's
spend and open reservations) live in Redis or in-process, never in the database, so the
hot path makes no database round-trip. ``subject`` is ``"tenant"`` or a key's id: one
unique index per tenant covers both without relying on NULLs in unique constraints
(which PostgreSQL and SQLite treat as distinct).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, Float, ForeignKey, Integer, Numeric, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from polymodal.db.models import Base, BigIntPK, utcnow

TENANT_SUBJECT = "tenant"


class RateLimitOverride(Base):
    """A tenant's (or one key's) own requests/tokens per minute, replacing the plan's
    default for that dimension; NULL keeps the default."""

    __tablename__ = "rate_limit_overrides"
    __table_args__ = (UniqueConstraint("tenant_id", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), default=None
    )
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Budget(Base):
    """A monthly budget in USD for a tenant or one of its keys. ``mode`` is ``hard``
    (calls that would exceed it get 402) or ``soft`` (calls proceed; alerts record)."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("tenant_id", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), default=None
    )
    monthly_limit_usd: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    mode: Mapped[str] = mapped_column(String(8))
    alert_thresholds: Mapped[list[float]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetAlert(Base):
    """The stored flag of a crossed alert threshold: at most one per budget subject,
    month and threshold (the unique constraint makes replicas agree)."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("tenant_id", "subject", "month", "threshold"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(40))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM, UTC
    threshold: Mapped[float] = mapped_column(Float)
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(20, 10))
    limit_usd: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
