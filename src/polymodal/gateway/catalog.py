"""The model catalog: shipped deployments merged with the operator's, keys resolved."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources

import yaml

from polymodal.domain.catalog import Deployment, Price
from polymodal.domain.errors import InvalidRequest, NotFound
from polymodal.settings import DeploymentSpec, Settings

KNOWN_CAPABILITIES = frozenset({"chat", "tools", "vision", "json", "reasoning", "embeddings"})


class CatalogError(ValueError):
    """The deployments configuration is wrong; one line naming the entry."""


def shipped_specs() -> list[DeploymentSpec]:
    text = resources.files("polymodal").joinpath("catalog.yaml").read_text(encoding="utf-8")
    return [DeploymentSpec.model_validate(d) for d in yaml.safe_load(text)["deployments"]]


def merged_specs(settings: Settings) -> list[DeploymentSpec]:
    by_id: dict[str, DeploymentSpec] = {}
    if settings.shipped_catalog:
        by_id = {spec.id: spec for spec in shipped_specs()}
    seen: set[str] = set()
    for spec in settings.deployments:
        if spec.id in seen:
            raise CatalogError(f"deployments: id {spec.id!r} appears twice")
        seen.add(spec.id)
        by_id[spec.id] = spec
    return [spec for spec in by_id.values() if spec.enabled]


class Catalog:
    """Deployments by id and by provider model name."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self._by_id: dict[str, Deployment] = {}
        self._by_model: dict[str, list[Deployment]] = {}
        for d in deployments:
            self._by_id[d.id] = d
            self._by_model.setdefault(d.model, []).append(d)

    def __iter__(self) -> Iterator[Deployment]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, deployment_id: str) -> Deployment | None:
        return self._by_id.get(deployment_id)

    def resolve(self, name: str, *, kind: str) -> Deployment:
        """A deployment by id, else by the provider's model name (available ones first).

        Raises `NotFound` (404, ``model_not_found``) naming the model when nothing matches,
        and `InvalidRequest` when it exists but cannot do ``kind`` (chat or embeddings).
        """
        found = self._by_id.get(name)
        if found is None:
            candidates = self._by_model.get(name, [])
            usable = [d for d in candidates if d.available] or candidates
            found = usable[0] if usable else None
        if found is None:
            raise NotFound(
                f"The model '{name}' does not exist; GET /v1/models lists the ones you can use.",
                code="model_not_found",
            )
        if kind == "chat" and not found.is_chat:
            raise InvalidRequest(
                f"'{name}' is an embedding model; it cannot serve chat completions.",
                code="model_not_chat",
            )
        if kind == "embeddings" and not found.is_embedding:
            raise InvalidRequest(
                f"'{name}' is a chat model; it cannot serve embeddings.",
                code="model_not_embedding",
            )
        return found


def build_catalog(
    settings: Settings,
    *,
    environ: Mapping[str, str],
    wires: Iterable[str],
    unavailable_reason: Callable[[Deployment], str | None],
) -> Catalog:
    """Resolve each deployment's key from ``environ`` and ask its provider whether it can
    run here (a local model's package may be missing). Unknown wires or capabilities are
    configuration errors."""
    known_wires = set(wires)
    deployments: list[Deployment] = []
    for spec in merged_specs(settings):
        if spec.provider not in known_wires:
            raise CatalogError(
                f"deployments: {spec.id!r} names unknown provider {spec.provider!r} "
                f"(known: {', '.join(sorted(known_wires))})"
            )
        unknown = set(spec.capabilities) - KNOWN_CAPABILITIES
        if unknown:
            raise CatalogError(
                f"deployments: {spec.id!r} has unknown capabilities {sorted(unknown)}"
            )
        if spec.provider != "local" and not spec.base_url:
            raise CatalogError(f"deployments: {spec.id!r} needs a base_url")
        key = environ.get(spec.api_key_env) if spec.api_key_env else None
        reason = None
        if spec.api_key_env and not key:
            reason = f"{spec.api_key_env} is not set"
        deployment = Deployment(
            id=spec.id,
            provider=spec.provider,
            model=spec.model,
            base_url=spec.base_url,
            price=Price(spec.price.input_per_mtok, spec.price.output_per_mtok),
            context_window=spec.context_window,
            capabilities=frozenset(spec.capabilities),
            api_key=key or None,
            max_output_tokens=spec.max_output_tokens,
            dimensions=spec.dimensions,
            unavailable_reason=reason,
            http2=spec.http2,
        )
        if reason is None and (reason := unavailable_reason(deployment)):
            deployment = dataclasses.replace(deployment, unavailable_reason=reason)
        deployments.append(deployment)
    return Catalog(deployments)
