"""Fixtures of the provider adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from polymodal.providers.base import ProviderContext


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One pooled client for the run, as the composition root shares one per process
    (building a client loads the CA bundle, which costs a tenth of a second)."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def context(http: httpx.AsyncClient) -> ProviderContext:
    return ProviderContext(http=http)
