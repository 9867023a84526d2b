"""Pick the cache adapter from the settings (the only place that knows both)."""

from __future__ import annotations

from polymodal.cache.base import Cache
from polymodal.cache.memory import MemoryCache
from polymodal.settings import Settings


def open_cache(settings: Settings) -> Cache:
    if settings.redis_url:
        from polymodal.cache.redis import RedisCache

        return RedisCache(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    return MemoryCache(max_entries=settings.memory_cache_max_entries)
