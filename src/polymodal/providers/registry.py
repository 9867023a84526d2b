"""Wire formats register themselves here; core code looks them up by name.

Adding a provider is one module that calls `register` plus one line in `BUILTIN`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from polymodal.providers.base import Provider, ProviderContext

Factory = Callable[[ProviderContext], Provider]
BUILTIN = (
    "polymodal.providers.openai",
    "polymodal.providers.anthropic",
    "polymodal.providers.gemini",
    "polymodal.providers.cohere",
    "polymodal.providers.local.provider",
)
_FACTORIES: dict[str, Factory] = {}


def register(wire: str) -> Callable[[Factory], Factory]:
    def decorate(factory: Factory) -> Factory:
        _FACTORIES[wire] = factory
        return factory

    return decorate


def load_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(module)


def wires() -> tuple[str, ...]:
    load_builtin()
    return tuple(sorted(_FACTORIES))


def create(wire: str, context: ProviderContext) -> Provider:
    load_builtin()
    try:
        factory = _FACTORIES[wire]
    except KeyError as e:
        raise KeyError(
            f"unknown provider wire {wire!r}; known: {', '.join(sorted(_FACTORIES))}"
        ) from e
    return factory(context)
