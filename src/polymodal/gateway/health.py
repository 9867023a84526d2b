"""Per-deployment health: circuit breaker, rate-limit cooldown, adaptive first-byte deadline.

Each process keeps the live view in memory, so the hot path never waits on the network
to ask "may I call this deployment?". Transitions that other processes must know about
(a breaker opening, a cooldown starting, a breaker closing) go through a `HealthBus`:
in-process it is a no-op, with Redis it is a pub/sub channel plus keys with expiry, so
replicas agree within milliseconds and a new process starts with the current state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Thresholds, all from settings (see Settings.breaker_* and first_byte_*)."""

    consecutive_failures: int = 3
    failure_rate: float = 0.5
    rate_window_s: float = 30.0
    rate_min_calls: int = 10
    open_s: float = 10.0
    max_open_s: float = 120.0
    first_byte_floor_s: float = 0.25
    first_byte_ceiling_s: float = 30.0
    first_byte_multiplier: float = 4.0
    first_byte_samples: int = 50
    latency_ceiling_s: float = 120.0
    idle_floor_s: float = 0.25
    idle_ceiling_s: float = 15.0
    idle_multiplier: float = 8.0


class Window:
    """The last ``maxlen`` samples, also kept in sorted order, so a percentile is an index
    rather than a sort: deadlines are read on every request, samples added once per call
    (insort and removal are memmoves over a few hundred floats)."""

    __slots__ = ("_order", "_sorted")

    def __init__(self, maxlen: int) -> None:
        self._order: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] = []

    def append(self, value: float) -> None:
        order = self._order
        if order.maxlen is not None and len(order) == order.maxlen:
            del self._sorted[bisect_left(self._sorted, order[0])]
        order.append(value)
        insort(self._sorted, value)

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.append(value)

    def percentile(self, q: float) -> float:
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[float]:
        return iter(self._order)


@dataclass(slots=True)
class DeploymentHealth:
    deployment: str
    state: BreakerState = "closed"
    open_until: float = 0.0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0
    opened_times: int = 0  # consecutive openings: each doubles the open time
    probing: bool = False
    outcomes: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=256))
    first_byte_s: Window = field(default_factory=lambda: Window(50))
    latency_s: Window = field(default_factory=lambda: Window(50))
    prompt_tokens: Window = field(default_factory=lambda: Window(50))
    gaps_s: Window = field(default_factory=lambda: Window(500))
    last_error: str = ""


class HealthBus(Protocol):
    """Carries breaker and cooldown transitions to the other processes."""

    def publish(self, deployment: str, open_until: float, cooldown_until: float) -> None: ...


class LocalBus:
    """The embedded profile: one process, nothing to tell anyone."""

    def publish(self, deployment: str, open_until: float, cooldown_until: float) -> None:
        return None


class HealthRegistry:
    def __init__(
        self,
        policy: HealthPolicy,
        *,
        bus: HealthBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.bus: HealthBus = bus or LocalBus()
        self._clock = clock
        self._by_id: dict[str, DeploymentHealth] = {}

    def reset(self) -> None:
        """Forget everything (tests and operators starting over)."""
        self._by_id.clear()

    def get(self, deployment: str) -> DeploymentHealth:
        health = self._by_id.get(deployment)
        if health is None:
            health = DeploymentHealth(
                deployment, first_byte_s=Window(self.policy.first_byte_samples)
            )
            self._by_id[deployment] = health
        return health

    def all(self) -> list[DeploymentHealth]:
        return list(self._by_id.values())

    # --- may we call it? -------------------------------------------------------------------

    def blocked_until(self, deployment: str) -> float | None:
        """When the deployment may be tried again, or None if it may be tried now.

        An open breaker whose time is up lets exactly one probe through (half-open)."""
        h = self.get(deployment)
        now = self._clock()
        if h.cooldown_until > now:
            return h.cooldown_until
        if h.state == "open":
            if h.open_until > now:
                return h.open_until
            h.state = "half_open"
            h.probing = False
        if h.state == "half_open":
            if h.probing:
                return now + 1.0
            h.probing = True
        return None

    def first_byte_deadline(self, deployment: str, prompt_tokens: int | None = None) -> float:
        """Adaptive: a multiple of the recent healthy p95, within floor and ceiling. With
        no history yet, the ceiling (a new deployment is not cut short). A prompt longer
        than the usual one scales the deadline up: reading the prompt (prefill) is part of
        the time to the first byte."""
        p = self.policy
        h = self.get(deployment)
        if len(h.first_byte_s) < 5:
            return p.first_byte_ceiling_s
        p95 = h.first_byte_s.percentile(0.95)
        scale = 1.0
        if prompt_tokens and h.prompt_tokens:
            usual = h.prompt_tokens.percentile(0.5)
            scale = max(1.0, prompt_tokens / max(usual, 1.0))
        deadline = max(p95 * p.first_byte_multiplier * scale, p.first_byte_floor_s)
        return min(deadline, p.first_byte_ceiling_s)

    def idle_deadline(self, deployment: str) -> float:
        """Longest silence allowed between stream chunks: a multiple of the deployment's
        recent p99 gap, within floor and ceiling (the ceiling until 20 gaps are known)."""
        p = self.policy
        gaps = self.get(deployment).gaps_s
        if len(gaps) < 20:
            return p.idle_ceiling_s
        p99 = gaps.percentile(0.99)
        return min(max(p99 * p.idle_multiplier, p.idle_floor_s), p.idle_ceiling_s)

    def record_gaps(self, deployment: str, gaps: list[float]) -> None:
        self.get(deployment).gaps_s.extend(gaps)

    def latency_deadline(self, deployment: str) -> float:
        """The same rule on whole-call latency, for calls that cannot stream."""
        p = self.policy
        samples = self.get(deployment).latency_s
        if len(samples) < 5:
            return p.latency_ceiling_s
        p95 = samples.percentile(0.95)
        return min(max(p95 * p.first_byte_multiplier, p.first_byte_floor_s), p.latency_ceiling_s)

    # --- outcomes --------------------------------------------------------------------------

    def success(
        self,
        deployment: str,
        *,
        first_byte_s: float | None,
        latency_s: float,
        prompt_tokens: int | None = None,
    ) -> None:
        h = self.get(deployment)
        h.consecutive_failures = 0
        h.outcomes.append((self._clock(), True))
        if first_byte_s is not None:
            h.first_byte_s.append(first_byte_s)
            if prompt_tokens:
                h.prompt_tokens.append(prompt_tokens)
        h.latency_s.append(latency_s)
        if h.state != "closed":
            h.state, h.probing, h.opened_times, h.open_until = "closed", False, 0, 0.0
            self.bus.publish(deployment, 0.0, h.cooldown_until)

    def failure(self, deployment: str, reason: str) -> None:
        """A failure that says the deployment is unhealthy (5xx, timeout, malformed)."""
        h = self.get(deployment)
        now = self._clock()
        h.last_error = reason
        h.consecutive_failures += 1
        h.outcomes.append((now, False))
        if h.state == "half_open" or self._should_open(h, now):
            self._open(h, now)

    def misconfigured(self, deployment: str, reason: str) -> None:
        """401/403 from the provider: no point retrying soon; open for the longest time."""
        h = self.get(deployment)
        h.last_error = reason
        h.opened_times = 16
        self._open(h, self._clock())

    def cooldown(self, deployment: str, seconds: float, reason: str) -> None:
        """429 / Retry-After: skip this deployment for that long (no breaker penalty)."""
        h = self.get(deployment)
        h.last_error = reason
        h.cooldown_until = max(h.cooldown_until, self._clock() + max(seconds, 0.0))
        self.bus.publish(deployment, h.open_until if h.state == "open" else 0.0, h.cooldown_until)

    def _should_open(self, h: DeploymentHealth, now: float) -> bool:
        p = self.policy
        if h.consecutive_failures >= p.consecutive_failures:
            return True
        recent = [ok for t, ok in h.outcomes if t >= now - p.rate_window_s]
        if len(recent) < p.rate_min_calls:
            return False
        return recent.count(False) / len(recent) >= p.failure_rate

    def _open(self, h: DeploymentHealth, now: float) -> None:
        p = self.policy
        h.state = "open"
        h.probing = False
        h.open_until = now + min(p.open_s * (2 ** min(h.opened_times, 16)), p.max_open_s)
        h.opened_times += 1
        self.bus.publish(h.deployment, h.open_until, h.cooldown_until)

    # --- what other processes told us ---------------------------------------------------------

    def apply_remote(self, deployment: str, open_until: float, cooldown_until: float) -> None:
        h = self.get(deployment)
        now = self._clock()
        h.cooldown_until = max(h.cooldown_until, cooldown_until)
        if open_until > now:
            if h.state != "open" or open_until > h.open_until:
                h.state, h.open_until, h.probing = "open", open_until, False
        elif open_until == 0.0 and h.state != "closed":
            h.state, h.open_until, h.probing, h.consecutive_failures = "closed", 0.0, False, 0

    def snapshot(self, deployment: str) -> dict[str, object]:
        h = self.get(deployment)
        now = self._clock()
        state: BreakerState = h.state
        if state == "open" and h.open_until <= now:
            state = "half_open"
        fb, lat = h.first_byte_s, h.latency_s
        return {
            "deployment": deployment,
            "breaker": state,
            "open_for_s": round(max(h.open_until - now, 0.0), 3) if state == "open" else 0.0,
            "cooldown_for_s": round(max(h.cooldown_until - now, 0.0), 3),
            "consecutive_failures": h.consecutive_failures,
            "first_byte_p50_ms": round(fb.percentile(0.5) * 1000, 2) if fb else None,
            "first_byte_p95_ms": round(fb.percentile(0.95) * 1000, 2) if fb else None,
            "latency_p50_ms": round(lat.percentile(0.5) * 1000, 2) if lat else None,
            "first_byte_deadline_ms": round(self.first_byte_deadline(deployment) * 1000, 1),
            "last_error": h.last_error or None,
        }


class LoopLag:
    """How late this process's event loop runs: a busy process answers late even when the
    upstream is healthy, so adaptive deadlines add an allowance for it rather than failing
    over (and opening breakers) because of our own load."""

    def __init__(self, *, interval_s: float = 0.025, window_s: float = 2.0) -> None:
        self._interval = interval_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(window_s / interval_s) + 1)
        self._window = window_s
        self._recent_max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self._interval)
            now = time.perf_counter()
            self._samples.append((now, now - before - self._interval))
            cutoff = now - self._window
            self._recent_max = max((lag for at, lag in self._samples if at >= cutoff), default=0.0)

    def recent_max_s(self) -> float:
        """The largest lag of the last window (kept current by the sampling task)."""
        return self._recent_max
