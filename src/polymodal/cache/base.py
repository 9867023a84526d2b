"""The cache interface every adapter satisfies (tested by one shared contract suite)."""

from __future__ import annotations

from typing import Protocol


class Cache(Protocol):
    """Bytes in, bytes out, with optional expiry. Keys are namespaced by the adapter."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool:
        """Remove a key; True when it existed."""
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Add to an integer counter (created at 0); ``ttl_s`` applies when it is created."""
        ...

    async def ping(self) -> None:
        """Raise when the backing store is unreachable."""
        ...

    async def close(self) -> None: ...
