"""Budget counters: the month's spend and the open reservations of each budget.

A call reserves its estimated cost on every budget it falls under (the tenant's and
its key's) in one atomic step, checked against the hard limits; when the call ends the
reservation is replaced by the actual cost (``settle``), or simply dropped when the call
failed before costing anything. Money is integer nano-dollars (``domain.economics``).

Counters are per budget and month (``YYYY-MM``, UTC): with Redis
``<prefix>budget:{<tenant>}:<subject>:<month>:spent`` (a string) and ``...:res`` (a hash
of reservation id -> ``amount:expiry_ms``); in-process on the embedded profile. A
missing spend counter (a new month, a Redis restart, a fresh process) is reported as
``missing`` and reconciled by the caller from the usage ledger (``seed``); settling
never creates it, so a reconciled value is not shadowed by a half-counted one. A
reservation whose call never settled (its process died) expires after its TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SPENT_TTL_S = 40 * 24 * 3600  # outlives its month; the next month has its own counter


@dataclass(frozen=True, slots=True)
class Account:
    """One budget's counters for one month. ``name`` carries the tenant and subject."""

    name: str
    month: str
    limit: int  # nano-dollars
    hard: bool


@dataclass(frozen=True, slots=True)
class Reservation:
    ok: bool
    missing: tuple[int, ...] = ()  # accounts whose spend must be reconciled first
    refused: int | None = None  # the hard account that refused
    spent: tuple[int, ...] = ()
    reserved: tuple[int, ...] = ()  # including this reservation when ok


@dataclass(frozen=True, slots=True)
class Settled:
    """Spend before and after this call's actual cost (None: counter missing)."""

    before: int | None
    after: int | None


class BudgetStore(Protocol):
    name: str

    async def reserve(
        self, accounts: Sequence[Account], *, rid: str, amount: int, ttl_s: float
    ) -> Reservation: ...

    async def settle(
        self, accounts: Sequence[Account], *, rid: str, actual: int
    ) -> list[Settled]: ...

    async def seed(self, account: Account, *, spent: int) -> None:
        """Set the month's spend from the ledger unless another process already did."""
        ...

    async def status(self, account: Account) -> tuple[int, int] | None:
        """(spent, reserved) now, or None when the spend counter is missing."""
        ...


# KEYS: spent_1, res_1, spent_2, res_2, ...; ARGV: rid, amount, ttl_ms, then per account
# limit and hard (1/0). Amounts are integers; %.0f keeps Lua's doubles out of 1e+15 form.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid, amount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 2
local missing = {'missing'}
local spent, held = {}, {}
for i = 1, n do
  local s = redis.call('GET', KEYS[2 * i - 1])
  if not s then missing[#missing + 1] = i - 1 else spent[i] = tonumber(s) end
end
if #missing > 1 then return missing end
for i = 1, n do
  local total = 0
  local entries = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #entries, 2 do
    local v = entries[j + 1]
    local sep = string.find(v, ':', 1, true)
    if tonumber(string.sub(v, sep + 1)) <= now then
      redis.call('HDEL', KEYS[2 * i], entries[j])
    else
      total = total + tonumber(string.sub(v, 1, sep - 1))
    end
  end
  held[i] = total
  if ARGV[3 + 2 * i] == '1' and spent[i] + total + amount > tonumber(ARGV[2 + 2 * i]) then
    return {'refused', i - 1, string.format('%.0f', spent[i]), string.format('%.0f', total)}
  end
end
local reply = {'ok'}
for i = 1, n do
  redis.call('HSET', KEYS[2 * i], rid, string.format('%.0f:%.0f', amount, now + ttl))
  redis.call('PEXPIRE', KEYS[2 * i], ttl)
  reply[#reply + 1] = string.format('%.0f', spent[i])
  reply[#reply + 1] = string.format('%.0f', held[i] + amount)
end
return reply
"""

# KEYS: spent_1, res_1, ...; ARGV: rid, actual. Replies before/after per account ('' if
# the spend counter is missing: the ledger will be read when it is next needed).
_SETTLE = """
local reply = {}
for i = 1, #KEYS / 2 do
  redis.call('HDEL', KEYS[2 * i], ARGV[1])
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 1 then
    local after = redis.call('INCRBY', KEYS[2 * i - 1], ARGV[2])
    reply[#reply + 1] = string.format('%.0f', after - tonumber(ARGV[2]))
    reply[#reply + 1] = string.format('%.0f', after)
  else
    reply[#reply + 1] = ''
    reply[#reply + 1] = ''
  end
end
return reply
"""

_STATUS = """
local s = redis.call('GET', KEYS[1])
if not s then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = 0
local entries = redis.call('HGETALL', KEYS[2])
for j = 2, #entries, 2 do
  local v = entries[j]
  local sep = string.find(v, ':', 1, true)
  if tonumber(string.sub(v, sep + 1)) > now then
    total = total + tonumber(string.sub(v, 1, sep - 1))
  end
end
return {s, string.format('%.0f', total)}
"""


def _int(value: Any) -> int:
    return int(value.decode() if isinstance(value, bytes) else value)


class RedisBudgets:
    name = "redis"

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "budget:"
        self._reserve: Any = client.register_script(_RESERVE)
        self._settle: Any = client.register_script(_SETTLE)
        self._status: Any = client.register_script(_STATUS)

    def _keys(self, accounts: Sequence[Account]) -> list[str]:
        keys: list[str] = []
        for a in accounts:
            base = f"{self._prefix}{a.name}:{a.month}"
            keys += [base + ":spent", base + ":res"]
        return keys

    async def reserve(
        self, accounts: Sequence[Account], *, rid: str, amount: int, ttl_s: float
    ) -> Reservation:
        args: list[str | int] = [rid, amount, max(1, int(ttl_s * 1000))]
        for a in accounts:
            args += [a.limit, 1 if a.hard else 0]
        reply = await self._reserve(keys=self._keys(accounts), args=args)
        kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if kind == "missing":
            return Reservation(False, missing=tuple(_int(i) for i in reply[1:]))
        if kind == "refused":
            return Reservation(
                False, refused=_int(reply[1]), spent=(_int(reply[2]),), reserved=(_int(reply[3]),)
            )
        values = [_int(v) for v in reply[1:]]
        return Reservation(True, spent=tuple(values[0::2]), reserved=tuple(values[1::2]))

    async def settle(self, accounts: Sequence[Account], *, rid: str, actual: int) -> list[Settled]:
        reply = await self._settle(keys=self._keys(accounts), args=[rid, actual])
        values = [None if v in (b"", "") else _int(v) for v in reply]
        return [Settled(values[i], values[i + 1]) for i in range(0, len(values), 2)]

    async def seed(self, account: Account, *, spent: int) -> None:
        key = self._keys([account])[0]
        await self._client.set(key, spent, nx=True, ex=SPENT_TTL_S)

    async def status(self, account: Account) -> tuple[int, int] | None:
        reply = await self._status(keys=self._keys([account]), args=[])
        if not reply:
            return None
        return _int(reply[0]), _int(reply[1])


@dataclass(slots=True)
class _Counters:
    spent: int
    held: dict[str, tuple[int, float]] = field(default_factory=dict)  # rid -> amount, expiry

    def reserved(self, now: float) -> int:
        for rid in [r for r, (_, exp) in self.held.items() if exp <= now]:
            del self.held[rid]
        return sum(amount for amount, _ in self.held.values())


class MemoryBudgets:
    """The embedded profile's counters: one process (atomic: no awaits inside)."""

    name = "in-process"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[tuple[str, str], _Counters] = {}

    async def reserve(
        self, accounts: Sequence[Account], *, rid: str, amount: int, ttl_s: float
    ) -> Reservation:
        counters = [self._data.get((a.name, a.month)) for a in accounts]
        missing = tuple(i for i, c in enumerate(counters) if c is None)
        if missing:
            return Reservation(False, missing=missing)
        now = self._clock()
        present = [c for c in counters if c is not None]
        held = [c.reserved(now) for c in present]
        for i, (a, c) in enumerate(zip(accounts, present, strict=True)):
            if a.hard and c.spent + held[i] + amount > a.limit:
                return Reservation(False, refused=i, spent=(c.spent,), reserved=(held[i],))
        for c in present:
            c.held[rid] = (amount, now + ttl_s)
        return Reservation(
            True,
            spent=tuple(c.spent for c in present),
            reserved=tuple(h + amount for h in held),
        )

    async def settle(self, accounts: Sequence[Account], *, rid: str, actual: int) -> list[Settled]:
        out: list[Settled] = []
        for a in accounts:
            c = self._data.get((a.name, a.month))
            if c is None:
                out.append(Settled(None, None))
                continue
            c.held.pop(rid, None)
            c.spent += actual
            out.append(Settled(c.spent - actual, c.spent))
        return out

    async def seed(self, account: Account, *, spent: int) -> None:
        self._data.setdefault((account.name, account.month), _Counters(spent))

    async def status(self, account: Account) -> tuple[int, int] | None:
        c = self._data.get((account.name, account.month))
        if c is None:
            return None
        return c.spent, c.reserved(self._clock())
