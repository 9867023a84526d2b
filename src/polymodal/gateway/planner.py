"""From a request to a plan: the route decision and the ordered candidates that can serve
it, after the checks that must pass before any upstream call (nothing is billed for a
request refused here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from polymodal.domain.catalog import Deployment
from polymodal.domain.chat import ChatRequest, Message
from polymodal.domain.errors import (
    InvalidRequest,
    PermissionDenied,
    PolymodalError,
    ServiceUnavailable,
)
from polymodal.gateway.catalog import Catalog
from polymodal.gateway.classifier import Classifier, RouteDecision
from polymodal.gateway.routing import (
    RouteTable,
    TenantPolicy,
    candidates,
    check_fallbacks,
    parse_tier,
)
from polymodal.providers.base import Provider

AUTO = "auto"
TIER_PREFIX = "tier:"
PER_MESSAGE_OVERHEAD = 4  # tokens a chat format adds per message: a safe over-estimate


@dataclass(frozen=True, slots=True)
class Plan:
    decision: RouteDecision
    candidates: list[Deployment]
    hedge_delay_s: float | None
    pinned: bool
    prompt_tokens: int
    policy: TenantPolicy


def text_of(message: Message) -> tuple[str, bool]:
    """The message's text and whether it carries an image."""
    content = message.get("content")
    if content is None:
        text, has_image = "", False
    elif isinstance(content, str):
        text, has_image = content, False
    else:
        text = " ".join(p["text"] for p in content if p["type"] == "text")
        has_image = any(p["type"] == "image_url" for p in content)
    for call in message.get("tool_calls") or []:
        text += " " + call["function"]["name"] + " " + call["function"]["arguments"]
    return text, has_image


class Planner:
    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        routes: RouteTable,
        classifier: Classifier,
        count_tokens: Callable[[str], int],
    ) -> None:
        self.catalog = catalog
        self._providers = providers
        self._routes = routes
        self._classifier = classifier
        self._count = count_tokens

    def estimate_prompt_tokens(self, messages: list[Message]) -> tuple[int, bool]:
        total, images = 0, False
        for message in messages:
            text, has_image = text_of(message)
            total += self._count(text) + PER_MESSAGE_OVERHEAD
            images = images or has_image
        return total, images

    def check(self, d: Deployment, request: ChatRequest, prompt_tokens: int, images: bool) -> None:
        """Raise a 4xx naming the problem if ``d`` cannot honour ``request``."""
        params = request.params
        supported: frozenset[str] | None = getattr(
            self._providers[d.provider], "supported_params", None
        )
        if supported is not None and (unsupported := sorted(set(params) - supported)):
            raise InvalidRequest(
                f"{unsupported[0]}: not supported by the model '{d.id}'.",
                code="unsupported_parameter",
            )
        if params.get("tools") and "tools" not in d.capabilities:
            raise InvalidRequest(
                f"tools: the model '{d.id}' does not support tool calling.",
                code="unsupported_parameter",
            )
        fmt = (params.get("response_format") or {}).get("type")
        if fmt in ("json_object", "json_schema") and "json" not in d.capabilities:
            raise InvalidRequest(
                f"response_format: the model '{d.id}' does not support {fmt}.",
                code="unsupported_parameter",
            )
        if images and "vision" not in d.capabilities:
            raise InvalidRequest(
                f"messages: the model '{d.id}' does not accept images.",
                code="unsupported_parameter",
            )
        wanted = request.max_output_tokens
        if wanted is not None and d.max_output_tokens is not None and wanted > d.max_output_tokens:
            raise InvalidRequest(
                f"max_tokens: {wanted} exceeds the {d.max_output_tokens} output tokens "
                f"'{d.id}' can produce.",
                code="max_tokens_too_large",
            )
        if prompt_tokens + (wanted or 0) > d.context_window:
            raise InvalidRequest(
                f"messages: about {prompt_tokens} tokens"
                + (f" plus max_tokens {wanted}" if wanted else "")
                + f" do not fit the {d.context_window}-token context window of '{d.id}'.",
                code="context_length_exceeded",
            )

    def plan(
        self,
        request: ChatRequest,
        policy: TenantPolicy,
        *,
        tier_header: str | None,
        fallbacks: list[str] | None,
    ) -> Plan:
        prompt_tokens, images = self.estimate_prompt_tokens(request.messages)
        decision = self._classifier.classify(request)
        model = request.model
        if model == AUTO or model.startswith(TIER_PREFIX):
            if fallbacks:
                raise InvalidRequest(
                    "fallbacks: only allowed with an explicit model, not with routing.",
                    code="invalid_fallbacks",
                )
            if model.startswith(TIER_PREFIX):
                tier = parse_tier(model.removeprefix(TIER_PREFIX), where="model")
            elif tier_header:
                tier = parse_tier(tier_header, where="x-polymodal-tier")
            else:
                tier = policy.default_tier or decision.tier
            tier = policy.cap(tier)
            decision = _with_tier(decision, tier)
            names = self._routes.names(tier, decision.task)
            pool = candidates(names, self.catalog, policy)
            if not pool:
                raise ServiceUnavailable(
                    f"No deployment of the '{tier}' route is available to this tenant.",
                    code="no_available_deployment",
                )
            usable = self._usable(pool, request, prompt_tokens, images)
            return Plan(
                decision, usable, self._routes.hedge_delay_s.get(tier), False, prompt_tokens, policy
            )

        d = self.catalog.resolve(model, kind="chat")
        if not policy.allows(d):
            raise PermissionDenied(
                f"model: this tenant may not use '{d.id}'.", code="deployment_not_allowed"
            )
        if not d.available and not fallbacks:
            raise ServiceUnavailable(
                f"The model '{d.id}' is not available on this server: {d.unavailable_reason}.",
                code="model_unavailable",
            )
        pool = [d] if d.available else []
        if fallbacks:
            check_fallbacks(fallbacks, self.catalog, policy)
            resolved = [
                self.catalog.get(n) or self.catalog.resolve(n, kind="chat") for n in fallbacks
            ]
            pool += candidates([r.id for r in resolved], self.catalog, policy)
        if d.available:
            self.check(d, request, prompt_tokens, images)  # the pinned model must fit
        usable = self._usable(pool, request, prompt_tokens, images) if pool else []
        if not usable:
            raise ServiceUnavailable(
                f"Neither '{d.id}' nor its fallbacks are available.", code="model_unavailable"
            )
        return Plan(_with_tier(decision, "pinned"), usable, None, True, prompt_tokens, policy)

    def _usable(
        self, pool: list[Deployment], request: ChatRequest, prompt_tokens: int, images: bool
    ) -> list[Deployment]:
        usable: list[Deployment] = []
        first_error: PolymodalError | None = None
        for d in pool:
            try:
                self.check(d, request, prompt_tokens, images)
            except PolymodalError as e:
                first_error = first_error or e
                continue
            usable.append(d)
        if not usable and first_error is not None:
            raise first_error
        return usable


def _with_tier(decision: RouteDecision, tier: str) -> RouteDecision:
    return replace(decision, tier=tier)
