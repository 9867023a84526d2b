"""The production cache: Redis, shared by every process and replica."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

# INCRBY, and set the expiry only when this call created the key.
_INCR_WITH_TTL = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(v) == tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""


class RedisCache:
    name = "redis"

    def __init__(
        self, url: str, *, prefix: str, timeout_s: float, max_connections: int = 256
    ) -> None:
        self._prefix = prefix
        # A blocking pool: a burst beyond max_connections waits (up to timeout_s) for a
        # free connection instead of failing (redis-py's default pool raises at 100).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self.client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._incr: Any = self.client.register_script(_INCR_WITH_TTL)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(self._k(key))
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        px = None if ttl_s is None else max(int(ttl_s * 1000), 1)
        await self.client.set(self._k(key), value, px=px)

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(self._k(key)))

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        px = 0 if ttl_s is None else max(int(ttl_s * 1000), 1)
        return int(await self._incr(keys=[self._k(key)], args=[amount, px]))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
