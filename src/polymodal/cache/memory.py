"""In-process adapters: a TTL + LRU map for objects, and the bytes `Cache` built on it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """A bounded map whose entries expire. Not thread-safe: use it from one event loop."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: V, *, ttl_s: float | None) -> None:
        expires = float("inf") if ttl_s is None else self._clock() + ttl_s
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def remaining_ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; None when it never does (or is absent)."""
        item = self._data.get(key)
        if item is None or item[0] == float("inf"):
            return None
        return max(item[0] - self._clock(), 0.0)

    def pop(self, key: str) -> V | None:
        item = self._data.pop(key, None)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class MemoryCache:
    """The embedded profile's cache: one process, nothing shared, nothing persisted."""

    name = "in-process"

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._map: TTLCache[bytes | int] = TTLCache(max_entries=max_entries, clock=clock)

    async def get(self, key: str) -> bytes | None:
        value = self._map.get(key)
        if isinstance(value, int):
            return str(value).encode()
        return value

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        self._map.set(key, value, ttl_s=ttl_s)

    async def delete(self, key: str) -> bool:
        return self._map.pop(key) is not None

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        current = self._map.get(key)
        if current is None:
            self._map.set(key, amount, ttl_s=ttl_s)
            return amount
        number = int(current) + amount
        # Keep the original expiry: re-set with the remaining lifetime.
        self._map.set(key, number, ttl_s=self._map.remaining_ttl(key))
        return number

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._map.clear()
