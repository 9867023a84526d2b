"""Rate limits and budgets as the gateway sees them: one hook (``Meter``) asked before
every model call, and a ticket that settles the call's real cost afterwards.

The gateway knows nothing of Redis, plans or budget tables: it hands the meter its
estimate (tokens and the worst-case cost over the candidate deployments) and later the
actual tokens and cost. The tenancy layer implements the meter; wiring injects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from polymodal.domain.principal import Principal

# Money in the counters is an integer number of nano-dollars: Decimal-exact enough for
# per-token prices (USD 0.10 / Mtok is 100 nano-dollars a token), and Lua's doubles hold
# integers up to 2**53, i.e. USD 9 million per budget month.
NANO = Decimal(1_000_000_000)


def to_nano(amount: Decimal) -> int:
    """USD -> nano-dollars, rounded up: an estimate must never be below the real cost."""
    return int((amount * NANO).to_integral_value(rounding="ROUND_CEILING"))


def from_nano(amount: int) -> Decimal:
    return Decimal(amount) / NANO


@dataclass(frozen=True, slots=True)
class Quota:
    """One rate-limit dimension (requests or tokens) as OpenAI's ``x-ratelimit-*``
    headers show it: the tightest of the tenant's and the key's buckets."""

    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    requests: Quota
    tokens: Quota


@dataclass(slots=True)
class LimitNote:
    """Filled in by the gateway so the API can send ``x-ratelimit-*`` headers on success
    (a rejection carries its own on the error)."""

    snapshot: RateSnapshot | None = None


class Ticket(Protocol):
    """An admitted call. Exactly one of ``settle``/``release`` takes effect (later calls
    are no-ops); neither blocks nor raises: the work runs off the response path."""

    snapshot: RateSnapshot | None

    def settle(self, *, tokens: int, cost: Decimal) -> None:
        """The call ended (well or not) having used ``tokens`` and cost ``cost``."""
        ...

    def release(self) -> None:
        """The call was never made or failed before it cost anything."""
        ...


class Meter(Protocol):
    async def admit(
        self,
        principal: Principal,
        *,
        tokens: int,
        cost: Decimal,
        rate_limited: bool = True,
    ) -> Ticket:
        """Check the rate limits for ``tokens`` and reserve ``cost`` against the
        budgets; raise ``RateLimitExceeded`` (429) or ``BudgetExceeded`` (402)."""
        ...


class NoTicket:
    """The ticket of a gateway built without a meter (unit tests, tools)."""

    snapshot: RateSnapshot | None = None

    def settle(self, *, tokens: int, cost: Decimal) -> None:
        return None

    def release(self) -> None:
        return None


NO_TICKET = NoTicket()
