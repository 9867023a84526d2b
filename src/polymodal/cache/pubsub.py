"""Broadcast small messages to every process: in-process callbacks, or Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

Handler = Callable[[bytes], None]


class Broadcaster(Protocol):
    name: str

    async def publish(self, channel: str, message: bytes) -> None: ...

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for every message on ``channel`` (own messages included)."""
        ...

    async def close(self) -> None: ...


class LocalBroadcaster:
    name = "in-process"

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def publish(self, channel: str, message: bytes) -> None:
        for handler in self._handlers.get(channel, []):
            handler(message)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def close(self) -> None:
        self._handlers.clear()


class RedisBroadcaster:
    """Redis PUBLISH/SUBSCRIBE under the deployment's key prefix. A lost connection is
    retried in the background; messages published meanwhile are missed, which is why
    callers also keep state in keys with expiry (read back on reconnect)."""

    name = "redis"

    def __init__(
        self, client: Any, *, prefix: str, on_reconnect: Callable[[], None] | None = None
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._handlers: dict[str, list[Handler]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._on_reconnect = on_reconnect

    async def publish(self, channel: str, message: bytes) -> None:
        await self._client.publish(self._prefix + channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(self._prefix + channel, []).append(handler)
        if self._task is None:
            ready = asyncio.Event()
            self._task = asyncio.create_task(self._listen(ready), name="redis-broadcast")
            await asyncio.wait_for(ready.wait(), 5)
        elif self._pubsub is not None:
            await self._pubsub.subscribe(self._prefix + channel)

    async def _listen(self, ready: asyncio.Event) -> None:
        while True:
            try:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(*self._handlers)
                ready.set()
                if self._on_reconnect is not None:
                    self._on_reconnect()
                async for message in self._pubsub.listen():
                    for handler in self._handlers.get(message["channel"].decode(), []):
                        handler(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away: keep serving, reconnect shortly
                ready.set()
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
