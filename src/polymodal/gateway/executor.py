"""Execute a call over ordered candidate deployments with sub-second failover.

What fails over and what does not is DESIGN.md section 10: rate limits cool the
deployment down and move on; 5xx, refused connections, timeouts and malformed bodies count
toward its breaker and move on at once; a too-long context moves on only to a larger
window; a content-policy block or a bad request ends the call. A failed attempt moves to
the next candidate immediately; a hung one moves at its adaptive deadline; with hedging,
a slow first byte starts the next candidate in parallel and the first answer wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
)
from polymodal.domain.errors import (
    AuthFailed,
    ContextTooLong,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
)
from polymodal.gateway.health import HealthRegistry, LoopLag
from polymodal.providers.base import Deadlines, Provider
from polymodal.providers.errors import truncated

T = TypeVar("T")
DEFAULT_COOLDOWN_S = 5.0  # a 429 without Retry-After


@dataclass(slots=True)
class Attempt:
    deployment: str
    outcome: str  # ok | an error code | skipped:<why>
    ms: float


@dataclass(slots=True)
class Trace:
    """How one request was served: attempts in order and the time failover cost."""

    started: float
    attempts: list[Attempt] = field(default_factory=list)
    deployment: Deployment | None = None
    failover_s: float = 0.0
    first_byte_at: float | None = None

    @property
    def tried(self) -> int:
        return sum(1 for a in self.attempts if not a.outcome.startswith("skipped"))


class RetryBudget:
    """Caps retries across all requests: each request earns ``ratio`` of a retry, each
    retry spends one; ``floor_per_s`` keeps failover possible at low traffic. An outage
    then costs at most (1 + ratio) upstream calls per request, not N."""

    def __init__(
        self, *, ratio: float, floor_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ratio = ratio
        self._floor = floor_per_s
        self._clock = clock
        self._tokens = max(floor_per_s, 1.0)
        self._cap = max(floor_per_s * 10, 10.0)
        self._last = clock()

    def on_request(self) -> None:
        now = self._clock()
        earned = self._ratio + (now - self._last) * self._floor
        self._last = now
        self._tokens = min(self._cap, self._tokens + earned)

    def try_spend(self) -> bool:
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _cooldown(error: RateLimited) -> float:
    return DEFAULT_COOLDOWN_S if error.retry_after is None else error.retry_after


class AllCandidatesDown(ServiceUnavailable):
    code = "all_candidates_down"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Executor:
    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        health: HealthRegistry,
        deadlines: Deadlines,
        max_attempts: int,
        budget: RetryBudget,
        lag: LoopLag | None = None,
        lag_multiplier: float = 2.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._lag = lag
        self._lag_multiplier = lag_multiplier
        self._providers = providers
        self._health = health
        self._base = deadlines
        self._max_attempts = max_attempts
        self._budget = budget
        self._clock = clock

    # --- shared loop ----------------------------------------------------------------------

    def _deadlines(
        self, d: Deployment, *, stream: bool, prompt_tokens: int | None = None
    ) -> Deadlines:
        if not getattr(self._providers[d.provider], "adaptive_deadlines", True):
            # In-process models are compute-bound, not network peers that hang: their
            # time to first byte follows prompt length and machine load, so only the
            # configured ceilings apply.
            return self._base
        # A busy loop reads answers late; that is our load, not the provider's fault.
        allowance = self._lag.recent_max_s() * self._lag_multiplier if self._lag else 0.0
        adaptive = self._health.first_byte_deadline(d.id, prompt_tokens) + allowance
        if stream:
            return dataclasses.replace(
                self._base,
                first_byte_s=min(adaptive, self._base.first_byte_s),
                idle_s=min(self._health.idle_deadline(d.id) + allowance, self._base.idle_s),
            )
        # Non-streaming answers arrive whole: the adaptive bound applies to the whole call,
        # scaled from the deployment's healthy latency rather than its first byte.
        return dataclasses.replace(
            self._base,
            total_s=min(self._health.latency_deadline(d.id) + allowance, self._base.total_s),
        )

    def _record_failure(
        self, trace: Trace, d: Deployment, error: ProviderError, began: float
    ) -> None:
        trace.attempts.append(Attempt(d.id, error.code, (self._clock() - began) * 1000))
        if isinstance(error, RateLimited):
            self._health.cooldown(d.id, _cooldown(error), error.code)
        elif isinstance(error, AuthFailed):
            self._health.misconfigured(d.id, error.code)
        elif isinstance(error, ContextTooLong):
            pass  # the request, not the deployment, is at fault
        else:
            self._health.failure(d.id, error.code)

    async def _run(
        self,
        candidates: list[Deployment],
        trace: Trace,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        hedge_delay_s: float | None,
        stream: bool,
    ) -> tuple[T, Deployment]:
        self._budget.on_request()
        earliest: float | None = None
        min_window = 0
        last_error: ProviderError | None = None
        pending = list(candidates)
        tried = 0
        while pending:
            d = pending.pop(0)
            if d.context_window <= min_window:
                trace.attempts.append(Attempt(d.id, "skipped:window", 0.0))
                continue
            blocked = self._health.blocked_until(d.id)
            if blocked is not None:
                earliest = blocked if earliest is None else min(earliest, blocked)
                trace.attempts.append(Attempt(d.id, "skipped:unhealthy", 0.0))
                continue
            if tried >= self._max_attempts or (tried and not self._budget.try_spend()):
                trace.attempts.append(Attempt(d.id, "skipped:retry_budget", 0.0))
                break
            tried += 1
            began = self._clock()
            hedge = self._next_hedge(pending, min_window) if hedge_delay_s is not None else None
            try:
                if hedge is not None:
                    result, winner = await self._hedged(
                        d, hedge, attempt, hedge_delay_s or 0.0, trace
                    )
                    if winner is hedge:
                        pending.remove(hedge)
                else:
                    result, winner = await attempt(d), d
            except ProviderError as e:
                last_error = e
                if not e.retryable and not isinstance(e, AuthFailed):
                    trace.attempts.append(Attempt(d.id, e.code, (self._clock() - began) * 1000))
                    raise
                self._record_failure(trace, d, e, began)
                if isinstance(e, ContextTooLong):
                    min_window = max(min_window, d.context_window)
                trace.failover_s += self._clock() - began
                continue
            elapsed = self._clock() - began
            trace.attempts.append(Attempt(winner.id, "ok", elapsed * 1000))
            trace.deployment = winner
            if not stream:
                self._health.success(winner.id, first_byte_s=None, latency_s=elapsed)
            return result, winner
        if last_error is not None and (
            isinstance(last_error, ContextTooLong) or len(candidates) == 1
        ):
            # One candidate only (a pinned model): its own error says most (a 429 with
            # Retry-After, a 504, ...).
            raise last_error
        now = time.time()
        retry_after = None if earliest is None else max(earliest - now, 0.0)
        for c in candidates:
            blocked = self._health.blocked_until(c.id)
            if blocked is not None:
                wait = max(blocked - now, 0.0)
                retry_after = wait if retry_after is None else min(retry_after, wait)
        names = ", ".join(c.id for c in candidates)
        raise AllCandidatesDown(
            f"No deployment could serve this request (tried: {names})"
            + (f"; last error: {last_error.code}" if last_error else "")
            + ".",
            retry_after=retry_after if retry_after is not None else 1.0,
        )

    @staticmethod
    def _next_hedge(pending: list[Deployment], min_window: int) -> Deployment | None:
        for d in pending:
            if d.context_window > min_window:
                return d
        return None

    async def _hedged(
        self,
        first: Deployment,
        second: Deployment,
        attempt: Callable[[Deployment], Awaitable[T]],
        delay_s: float,
        trace: Trace,
    ) -> tuple[T, Deployment]:
        """Start ``first``; if it has not answered after ``delay_s``, start ``second`` too.
        The first success wins and the other is cancelled. Both failing raises the error of
        ``first`` (the caller records it and moves on)."""
        tasks: dict[asyncio.Task[T], Deployment] = {asyncio.ensure_future(attempt(first)): first}
        done, _ = await asyncio.wait(tasks, timeout=delay_s)
        if not done and self._health.blocked_until(second.id) is None:
            trace.attempts.append(Attempt(second.id, "hedged", 0.0))
            tasks[asyncio.ensure_future(attempt(second))] = second
        errors: dict[Deployment, ProviderError] = {}
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    d = tasks.pop(task)
                    error = task.exception()
                    if error is None:
                        return task.result(), d
                    if not isinstance(error, ProviderError):
                        raise error
                    errors[d] = error
                    if d is second:
                        self._record_failure(trace, d, error, self._clock())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        raise errors.get(first) or next(iter(errors.values()))

    # --- calls ------------------------------------------------------------------------------

    async def complete(
        self,
        candidates: list[Deployment],
        request: ChatRequest,
        trace: Trace,
        *,
        hedge_delay_s: float | None = None,
    ) -> tuple[ChatCompletion, Deployment]:
        async def attempt(d: Deployment) -> ChatCompletion:
            return await self._providers[d.provider].complete(
                d, request, self._deadlines(d, stream=False)
            )

        return await self._run(
            candidates, trace, attempt, hedge_delay_s=hedge_delay_s, stream=False
        )

    async def embed(
        self, candidates: list[Deployment], request: EmbeddingRequest, trace: Trace
    ) -> tuple[EmbeddingResult, Deployment]:
        async def attempt(d: Deployment) -> EmbeddingResult:
            return await self._providers[d.provider].embed(
                d, request, self._deadlines(d, stream=False)
            )

        return await self._run(candidates, trace, attempt, hedge_delay_s=None, stream=False)

    async def open_stream(
        self,
        candidates: list[Deployment],
        request: ChatRequest,
        trace: Trace,
        *,
        hedge_delay_s: float | None = None,
        prompt_tokens: int | None = None,
    ) -> tuple[tuple[ChatChunk, AsyncIterator[ChatChunk]], Deployment]:
        """The first chunk and the rest of a stream from the first candidate that produces
        a first chunk in time."""

        async def attempt(d: Deployment) -> tuple[ChatChunk, AsyncIterator[ChatChunk]]:
            began = self._clock()
            iterator = self._providers[d.provider].stream(
                d, request, self._deadlines(d, stream=True, prompt_tokens=prompt_tokens)
            )
            try:
                first = await anext(iterator)
            except StopAsyncIteration as e:
                raise truncated(d.provider) from e
            except BaseException:
                with contextlib.suppress(Exception):
                    await iterator.aclose()  # type: ignore[attr-defined]
                raise
            waited = self._clock() - began
            self._health.success(
                d.id, first_byte_s=waited, latency_s=waited, prompt_tokens=prompt_tokens
            )
            return first, iterator

        return await self._run(candidates, trace, attempt, hedge_delay_s=hedge_delay_s, stream=True)

    def note_stream_failure(self, d: Deployment, error: ProviderError) -> None:
        """A stream that broke after its first chunk: the deployment is unhealthy."""
        if isinstance(error, RateLimited):
            self._health.cooldown(d.id, _cooldown(error), error.code)
        elif not isinstance(error, ContextTooLong):
            self._health.failure(d.id, error.code)

    def record_gaps(self, d: Deployment, gaps: list[float]) -> None:
        """Inter-chunk gaps of a healthy stream: they set the adaptive idle deadline."""
        self._health.record_gaps(d.id, gaps)

    def retry_allowed(self, trace: Trace) -> bool:
        return trace.tried < self._max_attempts and self._budget.try_spend()
