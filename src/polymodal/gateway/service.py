"""The gateway: classify -> route -> execute with failover -> account. Every model call in
polymodal goes through here (API, templates, chatbots, pipelines, media prompts)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResult,
)
from polymodal.domain.economics import NO_TICKET, LimitNote, Meter, Ticket
from polymodal.domain.errors import AuthFailed, InvalidRequest, ProviderError, ServiceUnavailable
from polymodal.domain.principal import Principal
from polymodal.domain.usage import UsageRecord, UsageSink
from polymodal.gateway.catalog import Catalog
from polymodal.gateway.classifier import RouteDecision
from polymodal.gateway.executor import Executor, Trace
from polymodal.gateway.planner import AUTO, Plan, Planner
from polymodal.gateway.routing import TenantPolicy
from polymodal.gateway.streams import Accumulator, as_continuation, continuation_request
from polymodal.observability.metrics import GatewayMetrics
from polymodal.tenancy.rbac import Permission, require

PolicyLookup = Callable[[Principal], Awaitable[TenantPolicy]]


async def _allow_all(_: Principal) -> TenantPolicy:
    return TenantPolicy()


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and what for: every usage row carries it.

    ``limits`` receives the rate-limit state for the API's ``x-ratelimit-*`` headers;
    ``rate_limited=False`` exempts work the tenant already paid admission for (e.g. a
    background ingestion job) from the per-minute limits, never from budgets."""

    principal: Principal
    feature: str = "api"
    request_id: str = ""
    tier_header: str | None = None
    limits: LimitNote | None = None
    rate_limited: bool = True


@dataclass(slots=True)
class Routed:
    """What the API shows about how a request was served (x-polymodal-route)."""

    decision: RouteDecision
    trace: Trace

    def header(self) -> str:
        d = self.trace.deployment
        return (
            f"tier={self.decision.tier}; task={self.decision.task}; "
            f"language={self.decision.language}; deployment={d.id if d else '-'}; "
            f"attempts={self.trace.tried}; failover_ms={self.trace.failover_s * 1000:.1f}"
        )


class Gateway:
    def __init__(
        self,
        *,
        planner: Planner,
        executor: Executor,
        recorder: UsageSink,
        count_tokens: Callable[[str], int],
        default_embedding_model: str,
        continuation: bool,
        always_stream: bool,
        policies: PolicyLookup = _allow_all,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        meter: Meter | None = None,
        estimate_output_tokens: int = 1024,
    ) -> None:
        self.planner = planner
        self.executor = executor
        self._recorder = recorder
        self._count = count_tokens
        self._default_embedding = default_embedding_model
        self._continuation = continuation
        self._always_stream = always_stream
        self._policies = policies
        self._metrics = metrics
        self._clock = clock
        self._meter = meter
        self._estimate_output = estimate_output_tokens

    @property
    def catalog(self) -> Catalog:
        return self.planner.catalog

    def models(self) -> list[Deployment]:
        return list(self.catalog)

    # --- accounting --------------------------------------------------------------------------

    def _record(
        self,
        ctx: CallContext,
        *,
        kind: str,
        trace: Trace,
        decision: RouteDecision | None,
        fallback: Deployment,
        tokens: list[tuple[Deployment, int, int]],
        stream: bool,
        status: str,
        ticket: Ticket = NO_TICKET,
    ) -> None:
        d = trace.deployment or fallback
        cost = sum((dep.price.cost(i, o) for dep, i, o in tokens), Decimal(0))
        ticket.settle(tokens=sum(i + o for _, i, o in tokens), cost=cost)
        p = ctx.principal
        self._recorder.record(
            UsageRecord(
                tenant_id=p.tenant_id,
                user_id=p.user_id,
                key_id=p.key_id,
                request_id=ctx.request_id,
                feature=ctx.feature,
                kind=kind,
                deployment=d.id,
                provider=d.provider,
                model=d.model,
                tokens_in=sum(i for _, i, _ in tokens),
                tokens_out=sum(o for _, _, o in tokens),
                cost=cost,
                latency_ms=(self._clock() - trace.started) * 1000,
                ttfb_ms=None
                if trace.first_byte_at is None
                else (trace.first_byte_at - trace.started) * 1000,
                stream=stream,
                status=status,
                tier=decision.tier if decision else None,
                task=decision.task if decision else None,
                attempts=trace.tried,
            )
        )
        if self._metrics is not None:
            self._metrics.call(
                attempts=[(a.deployment, a.outcome) for a in trace.attempts],
                failover_s=trace.failover_s,
            )

    @staticmethod
    def _public(d: Deployment | None, error: ProviderError) -> ProviderError:
        """The error as the client may see it: named deployment, no credentials."""
        if d is None:
            return error
        if isinstance(error, AuthFailed):
            error.message = (
                f"The provider behind '{d.id}' rejected this server's credentials; "
                "an operator must fix its API key."
            )
        elif not error.message.startswith(f"'{d.id}'"):
            message = error.message.replace(d.api_key, "***") if d.api_key else error.message
            error.message = f"'{d.id}': {message}"
        return error

    # --- limits and budgets -------------------------------------------------------------------

    async def _admit(self, ctx: CallContext, *, tokens: int, cost: Decimal) -> Ticket:
        if self._meter is None:
            return NO_TICKET
        ticket = await self._meter.admit(
            ctx.principal, tokens=tokens, cost=cost, rate_limited=ctx.rate_limited
        )
        if ctx.limits is not None:
            ctx.limits.snapshot = ticket.snapshot
        return ticket

    async def _admit_chat(self, ctx: CallContext, request: ChatRequest, plan: Plan) -> Ticket:
        """Reserve the worst case: the prompt plus max_tokens (or the configured default)
        at the most expensive candidate the call may end on."""
        wanted = request.max_output_tokens or self._estimate_output
        cost = max(
            (
                d.price.cost(plan.prompt_tokens, min(wanted, d.max_output_tokens or wanted))
                for d in plan.candidates
            ),
            default=Decimal(0),
        )
        return await self._admit(ctx, tokens=plan.prompt_tokens + wanted, cost=cost)

    # --- chat --------------------------------------------------------------------------------

    async def _plan(self, ctx: CallContext, request: ChatRequest) -> Plan:
        require(ctx.principal, Permission.MODELS_USE)  # a memoised frozenset lookup
        fallbacks = request.params.pop("fallbacks", None)
        if fallbacks is not None and (
            not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks)
        ):
            raise InvalidRequest(
                "fallbacks: must be a list of model names.", code="invalid_fallbacks"
            )
        policy = await self._policies(ctx.principal)
        plan = self.planner.plan(request, policy, tier_header=ctx.tier_header, fallbacks=fallbacks)
        if self._metrics is not None:
            self._metrics.decision(plan.decision.tier, plan.decision.task)
        return plan

    async def chat(self, ctx: CallContext, request: ChatRequest) -> tuple[ChatCompletion, Routed]:
        plan = await self._plan(ctx, request)
        ticket = await self._admit_chat(ctx, request, plan)
        try:
            return await self._chat(ctx, request, plan, ticket)
        except BaseException:
            ticket.release()  # a no-op when the call already settled
            raise

    async def _chat(
        self, ctx: CallContext, request: ChatRequest, plan: Plan, ticket: Ticket
    ) -> tuple[ChatCompletion, Routed]:
        trace = Trace(started=self._clock())
        routed = Routed(plan.decision, trace)
        if self._always_stream:
            # Upstream streams even when the client does not: a hung provider is then caught
            # at its first-byte deadline instead of at the whole-answer timeout.
            stream = await self._open(ctx, request, plan, trace, ticket)
            acc = Accumulator()
            try:
                async for chunk in stream:
                    acc.feed(chunk)
            finally:
                # Close it here, not at garbage collection: a cancelled call then records
                # and settles what it used before ``chat`` releases the rest.
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            return acc.completion(), routed
        try:
            result, d = await self.executor.complete(
                plan.candidates, request, trace, hedge_delay_s=plan.hedge_delay_s
            )
        except ProviderError as e:
            self._record(
                ctx,
                kind="chat",
                trace=trace,
                decision=plan.decision,
                fallback=plan.candidates[0],
                tokens=[],
                stream=False,
                status=e.code,
                ticket=ticket,
            )
            raise self._public(trace.deployment or plan.candidates[0], e) from e
        usage = result.get("usage")
        if usage:
            tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
        else:
            tokens_in = plan.prompt_tokens
            tokens_out = sum(
                self._count(c["message"].get("content") or "") for c in result["choices"]
            )
        self._record(
            ctx,
            kind="chat",
            trace=trace,
            decision=plan.decision,
            fallback=d,
            tokens=[(d, tokens_in, tokens_out)],
            stream=False,
            status="ok",
            ticket=ticket,
        )
        return result, routed

    async def chat_stream(
        self, ctx: CallContext, request: ChatRequest
    ) -> tuple[AsyncIterator[ChatChunk], Routed]:
        """Start a stream. Failures before the first chunk fail over or raise here (so the
        API can still answer with an HTTP error); later failures continue on the next
        candidate or raise from the iterator."""
        plan = await self._plan(ctx, request)
        ticket = await self._admit_chat(ctx, request, plan)
        trace = Trace(started=self._clock())
        try:
            stream = await self._open(ctx, request, plan, trace, ticket)
        except BaseException:
            ticket.release()
            raise
        return stream, Routed(plan.decision, trace)

    async def _open(
        self, ctx: CallContext, request: ChatRequest, plan: Plan, trace: Trace, ticket: Ticket
    ) -> AsyncIterator[ChatChunk]:
        try:
            (first, rest), d = await self.executor.open_stream(
                plan.candidates,
                request,
                trace,
                hedge_delay_s=plan.hedge_delay_s,
                prompt_tokens=plan.prompt_tokens,
            )
        except ProviderError as e:
            self._record(
                ctx,
                kind="chat",
                trace=trace,
                decision=plan.decision,
                fallback=plan.candidates[0],
                tokens=[],
                stream=request.stream,
                status=e.code,
                ticket=ticket,
            )
            raise self._public(trace.deployment or plan.candidates[0], e) from e
        trace.first_byte_at = self._clock()
        return self._relay(ctx, request, plan, trace, d, first, rest, ticket)

    async def _relay(
        self,
        ctx: CallContext,
        request: ChatRequest,
        plan: Plan,
        trace: Trace,
        d: Deployment,
        first: ChatChunk,
        rest: AsyncIterator[ChatChunk],
        ticket: Ticket,
    ) -> AsyncIterator[ChatChunk]:
        original = Accumulator()  # what the client has been sent
        segment = Accumulator()  # what the current deployment has sent
        tokens: list[tuple[Deployment, int, int]] = []
        status = "client_closed"
        continuing = False
        chunk: ChatChunk | None = first
        gaps: list[float] = []
        try:
            while True:
                try:
                    while chunk is not None:
                        segment.feed(chunk)
                        if continuing:
                            chunk = as_continuation(chunk, original)
                        original.feed(chunk)
                        yield chunk
                        waited = self._clock()
                        chunk = await anext(rest, None)
                        gaps.append(self._clock() - waited)
                    self.executor.record_gaps(d, gaps)
                    break
                except ProviderError as e:
                    gaps.clear()
                    self.executor.note_stream_failure(d, e)
                    tokens.append((d, plan.prompt_tokens, self._count(segment.content)))
                    remaining = [c for c in plan.candidates if c.id not in _tried(trace)]
                    if (
                        not (self._continuation and plan.policy.continue_streams)
                        or original.tool_calls
                        or not remaining
                        or not self.executor.retry_allowed(trace)
                    ):
                        raise self._public(d, e) from e
                    began = self._clock()
                    follow = continuation_request(
                        request, original.content, self._count(original.content)
                    )
                    try:
                        (chunk, rest), d = await self.executor.open_stream(
                            remaining, follow, trace, prompt_tokens=plan.prompt_tokens
                        )
                    except ProviderError:
                        raise self._public(d, e) from e
                    trace.failover_s += self._clock() - began
                    segment = Accumulator()
                    continuing = True
            status = "ok"
        except ProviderError as e:
            status = e.code
            raise
        finally:
            if segment.usage:
                tokens.append(
                    (d, segment.usage["prompt_tokens"], segment.usage["completion_tokens"])
                )
            elif (status != "ok" or segment.chunks) and (not tokens or tokens[-1][0] is not d):
                # No usage from the provider (a broken or cut stream): estimate it.
                tokens.append((d, plan.prompt_tokens, self._count(segment.content)))
            self._record(
                ctx,
                kind="chat",
                trace=trace,
                decision=plan.decision,
                fallback=d,
                tokens=tokens,
                stream=request.stream,
                status=status,
                ticket=ticket,  # a stream cut mid-way settles the tokens it used
            )
            close = getattr(rest, "aclose", None)
            if close is not None:
                await close()

    # --- embeddings --------------------------------------------------------------------------

    async def embed(
        self, ctx: CallContext, request: EmbeddingRequest
    ) -> tuple[EmbeddingResult, Deployment]:
        require(ctx.principal, Permission.MODELS_USE)
        name = self._default_embedding if request.model == AUTO else request.model
        d = self.catalog.resolve(name, kind="embeddings")
        policy = await self._policies(ctx.principal)
        if not policy.allows(d):
            raise InvalidRequest(
                f"model: this tenant may not use '{d.id}'.", code="deployment_not_allowed"
            )
        if not d.available:
            raise ServiceUnavailable(
                f"The model '{d.id}' is not available on this server: {d.unavailable_reason}.",
                code="model_unavailable",
            )
        if not request.inputs:
            raise InvalidRequest("input: must not be empty.", code="empty_input")
        estimate = sum(self._count(t) for t in request.inputs)
        ticket = await self._admit(ctx, tokens=estimate, cost=d.price.cost(estimate, 0))
        trace = Trace(started=self._clock())
        try:
            result, d = await self.executor.embed([d], request, trace)
        except BaseException as e:
            if not isinstance(e, ProviderError):
                ticket.release()
                raise
            self._record(
                ctx,
                kind="embeddings",
                trace=trace,
                decision=None,
                fallback=d,
                tokens=[],
                stream=False,
                status=e.code,
                ticket=ticket,
            )
            raise self._public(d, e) from e
        tokens = result.prompt_tokens or estimate
        self._record(
            ctx,
            kind="embeddings",
            trace=trace,
            decision=None,
            fallback=d,
            tokens=[(d, tokens, 0)],
            stream=False,
            status="ok",
            ticket=ticket,
        )
        return result, d


def _tried(trace: Trace) -> set[str]:
    return {a.deployment for a in trace.attempts if not a.outcome.startswith("skipped")}
