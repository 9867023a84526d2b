"""The limiter and the budget store, on real Redis (the Lua scripts) and in-process: one
contract, including concurrent callers on separate connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from polymodal.tenancy.budgets import Account, MemoryBudgets, RedisBudgets
from polymodal.tenancy.limits import Bucket, MemoryLimiter, RedisLimiter


@pytest.fixture(params=["redis", "memory"])
async def backend(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[tuple[str, Any]]:
    """(kind, factory): the factory builds a limiter or store as one more "process"
    (its own Redis connection pool) over the same shared state."""
    if request.param == "memory":
        shared: dict[str, Any] = {"limiter": MemoryLimiter(), "budgets": MemoryBudgets()}
        yield "memory", lambda what: shared[what]
        return
    url = request.getfixturevalue("redis_url")
    clients: list[aioredis.Redis] = []

    def make(what: str) -> Any:
        client = aioredis.Redis.from_url(url)
        clients.append(client)
        if what == "limiter":
            return RedisLimiter(client, prefix=redis_prefix)
        return RedisBudgets(client, prefix=redis_prefix)

    yield "redis", make
    for c in clients:
        await c.aclose()


def name() -> str:
    return f"{{{uuid.uuid4()}}}:tenant"


async def test_a_bucket_admits_its_burst_then_refuses(backend: tuple[str, Any]) -> None:
    _, make = backend
    limiter = make("limiter")
    b = Bucket(name() + ":rpm", per_minute=20, cost=1)
    verdicts = [await limiter.acquire([b]) for _ in range(21)]
    assert all(v.allowed for v in verdicts[:20])
    assert [v.states[0].remaining for v in verdicts[:3]] == [19, 18, 17]
    refused = verdicts[20]
    assert not refused.allowed
    assert refused.refused == 0
    # 20 a minute refill one every 3 s: the next one is at most 3 s away.
    assert 2.0 < refused.retry_after_s <= 3.0
    assert refused.states[0].remaining == 0
    assert 57 < refused.states[0].reset_s <= 60


async def test_buckets_of_one_call_move_together(backend: tuple[str, Any]) -> None:
    """A call refused by its token bucket takes nothing from its request bucket."""
    _, make = backend
    limiter = make("limiter")
    n = name()
    requests, tokens = Bucket(n + ":rpm", 10, 1), Bucket(n + ":tpm", 1000, 600)
    assert (await limiter.acquire([requests, tokens])).allowed
    second = await limiter.acquire([requests, tokens])
    assert not second.allowed
    assert second.refused == 1
    look = await limiter.acquire([Bucket(n + ":rpm", 10, 0), Bucket(n + ":tpm", 1000, 0)])
    assert look.states[0].remaining == 9  # only the admitted call counted
    assert look.states[1].remaining == 400


async def test_a_refund_gives_unused_tokens_back(backend: tuple[str, Any]) -> None:
    _, make = backend
    limiter = make("limiter")
    b = Bucket(name() + ":tpm", 1000, 800)
    assert (await limiter.acquire([b])).allowed
    assert not (await limiter.acquire([b])).allowed
    await limiter.refund(Bucket(b.name, 1000, 790))  # the call used 10 of its 800
    after = await limiter.acquire([b])
    assert after.allowed
    assert 180 <= after.states[0].remaining <= 190


async def test_concurrent_callers_never_exceed_the_limit(backend: tuple[str, Any]) -> None:
    """100 calls at once from 5 "processes" (5 connection pools) on a limit of 30."""
    _, make = backend
    limiters = [make("limiter") for _ in range(5)]
    b = Bucket(name() + ":rpm", 30, 1)
    verdicts = await asyncio.gather(*(limiters[i % 5].acquire([b]) for i in range(100)))
    assert sum(v.allowed for v in verdicts) == 30


def account(limit: int, *, hard: bool = True) -> Account:
    return Account(name=name(), month="2026-11", limit=limit, hard=hard)


async def test_a_missing_spend_must_be_seeded_first(backend: tuple[str, Any]) -> None:
    _, make = backend
    store = make("budgets")
    a = account(1000)
    first = await store.reserve([a], rid="r1", amount=10, ttl_s=60)
    assert not first.ok and first.missing == (0,)
    await store.seed(a, spent=500)
    await store.seed(a, spent=0)  # a second seed (another process) does not overwrite
    ok = await store.reserve([a], rid="r1", amount=10, ttl_s=60)
    assert ok.ok and ok.spent == (500,) and ok.reserved == (10,)
    assert await store.status(a) == (500, 10)


async def test_reserve_refuse_settle_and_release(backend: tuple[str, Any]) -> None:
    _, make = backend
    store = make("budgets")
    tenant, key = account(100), account(1000)
    for a in (tenant, key):
        await store.seed(a, spent=0)
    assert (await store.reserve([tenant, key], rid="a", amount=60, ttl_s=60)).ok
    refused = await store.reserve([tenant, key], rid="b", amount=60, ttl_s=60)
    assert not refused.ok and refused.refused == 0
    assert refused.spent == (0,) and refused.reserved == (60,)
    assert await store.status(key) == (0, 60)  # the refused call held nothing anywhere
    settled = await store.settle([tenant, key], rid="a", actual=25)
    assert [(s.before, s.after) for s in settled] == [(0, 25), (0, 25)]
    assert await store.status(tenant) == (25, 0)
    assert (await store.reserve([tenant], rid="c", amount=70, ttl_s=60)).ok
    await store.settle([tenant], rid="c", actual=0)  # released
    assert await store.status(tenant) == (25, 0)


async def test_a_soft_budget_never_refuses(backend: tuple[str, Any]) -> None:
    _, make = backend
    store = make("budgets")
    a = account(10, hard=False)
    await store.seed(a, spent=50)
    assert (await store.reserve([a], rid="x", amount=100, ttl_s=60)).ok


async def test_concurrent_reservations_never_overcommit(backend: tuple[str, Any]) -> None:
    """60 reservations of 10 at once from 4 "processes" against 100: exactly 10 fit."""
    _, make = backend
    stores = [make("budgets") for _ in range(4)]
    a = account(100)
    await stores[0].seed(a, spent=0)
    results = await asyncio.gather(
        *(stores[i % 4].reserve([a], rid=f"r{i}", amount=10, ttl_s=60) for i in range(60))
    )
    assert sum(r.ok for r in results) == 10
    assert await stores[1].status(a) == (0, 100)


async def test_an_abandoned_reservation_expires(backend: tuple[str, Any]) -> None:
    """A process that died mid-call leaves a reservation; it stops counting at its TTL."""
    kind, make = backend
    store = make("budgets")
    a = account(100)
    await store.seed(a, spent=0)
    assert (await store.reserve([a], rid="dead", amount=100, ttl_s=0.05)).ok
    deadline = asyncio.get_running_loop().time() + 2
    while not (await store.reserve([a], rid="next", amount=100, ttl_s=60)).ok:
        assert asyncio.get_running_loop().time() < deadline, f"{kind}: never expired"
        await asyncio.sleep(0.01)


async def test_a_call_that_exactly_fills_its_bucket_is_admitted(backend: tuple[str, Any]) -> None:
    """Filling a bucket to exactly one minute is allowed, whatever the float noise."""
    _, make = backend
    limiter = make("limiter")
    for per_minute, cost in ((1, 1), (3, 3), (7, 7), (1000, 1000), (997, 997)):
        for _ in range(5):
            b = Bucket(name() + ":x", per_minute, cost)
            assert (await limiter.acquire([b])).allowed, (per_minute, cost)
            assert not (await limiter.acquire([Bucket(b.name, per_minute, 1)])).allowed
