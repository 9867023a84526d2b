"""Policy: from a route decision (tier, task) and the tenant's rules to an ordered list of
candidate deployments. The routes table lives in polymodal.yaml (`routes:`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from polymodal.domain.catalog import Deployment
from polymodal.domain.errors import InvalidRequest, PermissionDenied
from polymodal.gateway.catalog import Catalog

TIERS = ("simple", "complex", "critical")
TASKS = (
    "chat",
    "code",
    "reasoning",
    "math",
    "creative",
    "extraction",
    "summarization",
    "translation",
    "classification",
)


class RoutesError(ValueError):
    """The routes table names something that does not exist; one line naming it."""


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What a tenant allows: providers or deployments (empty = all), tier bounds."""

    allowed_providers: frozenset[str] = frozenset()
    allowed_deployments: frozenset[str] = frozenset()
    max_tier: str = "critical"
    default_tier: str | None = None
    continue_streams: bool = True

    def allows(self, d: Deployment) -> bool:
        if self.allowed_providers and d.provider not in self.allowed_providers:
            return False
        return not (self.allowed_deployments and d.id not in self.allowed_deployments)

    def cap(self, tier: str) -> str:
        return TIERS[min(TIERS.index(tier), TIERS.index(self.max_tier))]


@dataclass(frozen=True, slots=True)
class RouteTable:
    tiers: dict[str, tuple[str, ...]]
    tasks: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    hedge_delay_s: dict[str, float] = field(default_factory=dict)

    def names(self, tier: str, task: str) -> tuple[str, ...]:
        return self.tasks.get(task, {}).get(tier) or self.tiers[tier]

    def validate(self, catalog: Catalog) -> None:
        for tier in TIERS:
            if not self.tiers.get(tier):
                raise RoutesError(f"routes.{tier}: needs at least one deployment")
        lists = [(f"routes.{t}", names) for t, names in self.tiers.items()]
        lists += [
            (f"routes.tasks.{task}.{tier}", names)
            for task, by_tier in self.tasks.items()
            for tier, names in by_tier.items()
        ]
        for task, by_tier in self.tasks.items():
            if task not in TASKS:
                raise RoutesError(f"routes.tasks.{task}: unknown task (known: {', '.join(TASKS)})")
            for tier in by_tier:
                if tier not in TIERS:
                    raise RoutesError(f"routes.tasks.{task}.{tier}: unknown tier")
        for where, names in lists:
            for name in names:
                d = catalog.get(name)
                if d is None:
                    raise RoutesError(f"{where}: names missing deployment {name!r}")
                if not d.is_chat:
                    raise RoutesError(f"{where}: {name!r} is not a chat deployment")


def candidates(
    names: tuple[str, ...] | list[str], catalog: Catalog, policy: TenantPolicy
) -> list[Deployment]:
    """Ordered, deduplicated, available and allowed deployments."""
    out: list[Deployment] = []
    seen: set[str] = set()
    for name in names:
        d = catalog.get(name)
        if d is None or d.id in seen or not d.available or not policy.allows(d):
            continue
        seen.add(d.id)
        out.append(d)
    return out


def parse_tier(value: str, *, where: str) -> str:
    if value not in TIERS:
        raise InvalidRequest(
            f"{where}: unknown tier {value!r}; use one of {', '.join(TIERS)}.", code="unknown_tier"
        )
    return value


def check_fallbacks(names: list[str], catalog: Catalog, policy: TenantPolicy) -> None:
    for i, name in enumerate(names):
        d = catalog.get(name) or _by_model(catalog, name)
        if d is None:
            raise InvalidRequest(
                f"fallbacks[{i}]: the model '{name}' does not exist.", code="model_not_found"
            )
        if not policy.allows(d):
            raise PermissionDenied(
                f"fallbacks[{i}]: this tenant may not use '{name}'.", code="deployment_not_allowed"
            )


def _by_model(catalog: Catalog, name: str) -> Deployment | None:
    try:
        return catalog.resolve(name, kind="chat")
    except Exception:  # resolve raises domain errors for unknown or non-chat names
        return None
