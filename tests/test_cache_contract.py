"""One contract, two adapters: the in-process cache and Redis behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from polymodal.cache import Cache, MemoryCache
from polymodal.cache.redis import RedisCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        c: Cache = MemoryCache(max_entries=1000)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        c = RedisCache(url, prefix=prefix, timeout_s=1.0)
    await c.ping()
    try:
        yield c
    finally:
        await c.close()


async def test_set_get_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"v1")
    assert await cache.get("k") == b"v1"
    await cache.set("k", b"v2")
    assert await cache.get("k") == b"v2"
    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    assert await cache.get("k") is None


async def test_incr_counts_from_zero(cache: Cache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    assert await cache.get("n") == b"6"


async def test_values_expire(cache: Cache) -> None:
    # A real 50 ms TTL: both adapters must honour sub-second expiry.
    await cache.set("short", b"x", ttl_s=0.05)
    await cache.set("long", b"y", ttl_s=60)
    assert await cache.get("short") == b"x"
    import asyncio

    for _ in range(100):
        if await cache.get("short") is None:
            break
        await asyncio.sleep(0.01)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"y"


async def test_incr_ttl_set_on_create_only(cache: Cache) -> None:
    import asyncio

    assert await cache.incr("win", ttl_s=0.2) == 1
    assert await cache.incr("win", ttl_s=100) == 2  # does not extend the window
    for _ in range(100):
        if await cache.get("win") is None:
            break
        await asyncio.sleep(0.01)
    assert await cache.get("win") is None


def test_memory_cache_evicts_least_recently_used() -> None:
    import asyncio

    async def scenario() -> None:
        c = MemoryCache(max_entries=2)
        await c.set("a", b"1")
        await c.set("b", b"2")
        assert await c.get("a") == b"1"  # a is now most recent
        await c.set("c", b"3")
        assert await c.get("b") is None
        assert await c.get("a") == b"1"
        assert await c.get("c") == b"3"

    asyncio.run(scenario())


def test_memory_cache_expiry_with_clock() -> None:
    import asyncio

    clock = FakeClock()

    async def scenario() -> None:
        c = MemoryCache(max_entries=10, clock=clock)
        await c.set("k", b"v", ttl_s=5)
        clock.now += 4.9
        assert await c.get("k") == b"v"
        clock.now += 0.2
        assert await c.get("k") is None

    asyncio.run(scenario())


async def test_redis_keys_carry_the_prefix(redis_url: str, redis_prefix: str) -> None:
    c = RedisCache(redis_url, prefix=redis_prefix, timeout_s=1.0)
    try:
        await c.set("visible", b"1")
        assert await c.client.get(redis_prefix + "visible") == b"1"
        assert await c.client.get("visible") is None
    finally:
        await c.close()
