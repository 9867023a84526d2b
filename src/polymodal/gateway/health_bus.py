"""Share breaker and cooldown transitions between processes and replicas.

A transition is published on a channel (every process applies it within milliseconds) and
written to a key that expires when it no longer matters, so a process that starts, or
reconnects after Redis was away, reads the current state instead of waiting for news.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from polymodal.cache.base import Cache
from polymodal.cache.pubsub import Broadcaster
from polymodal.gateway.health import HealthRegistry
from polymodal.observability.logging import get_logger

CHANNEL = "health"
KEY_PREFIX = "health:"
KEY_GRACE_S = 60.0
log = get_logger("polymodal.health")


class SharedHealthBus:
    def __init__(self, broadcaster: Broadcaster, cache: Cache) -> None:
        self._broadcaster = broadcaster
        self._cache = cache
        self._registry: HealthRegistry | None = None
        self._origin = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[None]] = set()

    async def attach(self, registry: HealthRegistry, deployments: list[str]) -> None:
        """Load what other processes already know, then listen for their news."""
        self._registry = registry
        registry.bus = self
        for name in deployments:
            try:
                raw = await self._cache.get(KEY_PREFIX + name)
            except Exception:  # Redis away at start-up: start from a clean view
                log.warning("health state unavailable at start-up", deployment=name)
                return
            if raw:
                self._apply(raw, own_too=True)
        await self._broadcaster.subscribe(CHANNEL, self._apply)

    def publish(self, deployment: str, open_until: float, cooldown_until: float) -> None:
        message = orjson.dumps(
            {"d": deployment, "o": open_until, "c": cooldown_until, "p": self._origin}
        )
        task = asyncio.get_running_loop().create_task(
            self._send(deployment, message, max(open_until, cooldown_until))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, deployment: str, message: bytes, until: float) -> None:
        ttl = max(until - time.time(), 0.0) + KEY_GRACE_S
        try:
            await self._cache.set(KEY_PREFIX + deployment, message, ttl_s=ttl)
            await self._broadcaster.publish(CHANNEL, message)
        except Exception:  # Redis away: this process still acts on its own view
            log.warning("could not share health transition", deployment=deployment)

    def _apply(self, raw: bytes, own_too: bool = False) -> None:
        if self._registry is None:
            return
        try:
            data = orjson.loads(raw)
            if data.get("p") == self._origin and not own_too:
                return
            self._registry.apply_remote(str(data["d"]), float(data["o"]), float(data["c"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed health message")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
