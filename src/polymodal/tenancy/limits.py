"""Rate limits: requests and tokens per minute, per tenant and per key, with GCRA.

GCRA (the generic cell rate algorithm) keeps one number per bucket: the theoretical
arrival time (TAT) of the next unit. A bucket of ``L`` units a minute spends
``60 s / L`` of TAT per unit and admits a call while TAT stays within one minute of now,
so a full bucket allows a burst of ``L`` and then refills smoothly. All the buckets of
one call (tenant requests, tenant tokens, and the key's when it has its own limits) are
checked and updated in one step: with Redis in one Lua script (atomic across every
process and replica, timed by the Redis server's clock), in-process on the embedded
profile. Tokens are taken at their estimate before the call; the unused part is given
back (``refund``) when the call settles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

PERIOD_S = 60.0
_EPSILON_S = 1e-9  # a bucket filled to exactly one period is full, not over (float noise)


@dataclass(frozen=True, slots=True)
class Bucket:
    """``name`` is unique per tenant, subject and dimension (it carries the tenant)."""

    name: str
    per_minute: int
    cost: int

    @property
    def interval_s(self) -> float:
        return PERIOD_S / self.per_minute


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket after the decision: ``used_s`` is how far its TAT is ahead of now."""

    per_minute: int
    used_s: float

    @property
    def remaining(self) -> int:
        free = PERIOD_S - self.used_s
        return max(0, math.floor(free * self.per_minute / PERIOD_S + 1e-9))

    @property
    def reset_s(self) -> float:
        return max(0.0, self.used_s)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float
    states: tuple[BucketState, ...]
    refused: int | None = None  # index of the first bucket that refused


class Limiter(Protocol):
    name: str

    async def acquire(self, buckets: Sequence[Bucket]) -> Verdict:
        """Take every bucket's cost, or none of them when one would overflow."""
        ...

    async def refund(self, bucket: Bucket) -> None:
        """Give ``bucket.cost`` units back (an estimate that was not used)."""
        ...


# KEYS[i]: bucket; ARGV[1]: period (ms); ARGV[2i], ARGV[2i+1]: ms per unit, cost.
# Replies {allowed, retry_ms, first_refused, used_ms...} with numbers as strings (Redis
# truncates Lua numbers to integers).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local period = tonumber(ARGV[1])
local allowed, retry, refused = 1, 0, 0
local tats, news = {}, {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new = tat + interval * cost
  local over = new - now - period
  if over > 1e-6 then  -- a bucket of exactly one period is full, not over (float noise)
    if allowed == 1 then refused = i end
    allowed = 0
    if over > retry then retry = over end
  end
  tats[i] = tat
  news[i] = new
end
local reply = {allowed, string.format('%.3f', retry), refused}
for i = 1, #KEYS do
  local used = tats[i]
  if allowed == 1 then
    used = news[i]
    if news[i] > now then
      redis.call('SET', KEYS[i], string.format('%.3f', news[i]), 'PX', math.ceil(news[i] - now) + 1)
    end
  end
  reply[#reply + 1] = string.format('%.3f', used - now)
end
return reply
"""

# KEYS[1]: bucket; ARGV[1]: ms per unit; ARGV[2]: units to give back.
_REFUND = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local new = tat - tonumber(ARGV[1]) * tonumber(ARGV[2])
if new <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1)
end
return 1
"""


class RedisLimiter:
    """Buckets shared by every process through Redis: ``<prefix>rl:{<tenant>}:...``
    (the braces keep one tenant's buckets in one Redis Cluster slot, as a multi-key
    script needs)."""

    name = "redis"

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._prefix = prefix + "rl:"
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._refund: Any = client.register_script(_REFUND)

    async def acquire(self, buckets: Sequence[Bucket]) -> Verdict:
        args: list[str | float | int] = [PERIOD_S * 1000]
        for b in buckets:
            args += [repr(b.interval_s * 1000), b.cost]
        reply = await self._acquire(keys=[self._prefix + b.name for b in buckets], args=args)
        allowed, retry_ms, refused = int(reply[0]), float(reply[1]), int(reply[2])
        states = tuple(
            BucketState(b.per_minute, float(used) / 1000)
            for b, used in zip(buckets, reply[3:], strict=True)
        )
        return Verdict(bool(allowed), retry_ms / 1000, states, refused - 1 if refused else None)

    async def refund(self, bucket: Bucket) -> None:
        if bucket.cost > 0:
            await self._refund(
                keys=[self._prefix + bucket.name],
                args=[repr(bucket.interval_s * 1000), bucket.cost],
            )


class MemoryLimiter:
    """The embedded profile's buckets: one process, one event loop (no awaits inside a
    decision, so it is atomic there). Idle buckets are forgotten once they are full."""

    name = "in-process"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000):
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._max = max_buckets

    async def acquire(self, buckets: Sequence[Bucket]) -> Verdict:
        now = self._clock()
        tats = [max(self._tat.get(b.name, now), now) for b in buckets]
        news = [tat + b.interval_s * b.cost for tat, b in zip(tats, buckets, strict=True)]
        overs = [new - now - PERIOD_S for new in news]
        refused = next((i for i, over in enumerate(overs) if over > _EPSILON_S), None)
        if refused is not None:
            states = tuple(
                BucketState(b.per_minute, tat - now) for b, tat in zip(buckets, tats, strict=True)
            )
            return Verdict(False, max(overs), states, refused)
        for b, new in zip(buckets, news, strict=True):
            self._tat[b.name] = new
        if len(self._tat) > self._max:
            self._prune(now)
        states = tuple(
            BucketState(b.per_minute, new - now) for b, new in zip(buckets, news, strict=True)
        )
        return Verdict(True, 0.0, states)

    async def refund(self, bucket: Bucket) -> None:
        tat = self._tat.get(bucket.name)
        if tat is not None:
            self._tat[bucket.name] = tat - bucket.interval_s * bucket.cost

    def _prune(self, now: float) -> None:
        for name in [n for n, tat in self._tat.items() if tat <= now]:
            del self._tat[name]
