"""Key-value cache behind one small interface: in-process (embedded) or Redis (production)."""

from polymodal.cache.base import Cache
from polymodal.cache.factory import open_cache
from polymodal.cache.memory import MemoryCache, TTLCache

__all__ = ["Cache", "MemoryCache", "TTLCache", "open_cache"]
