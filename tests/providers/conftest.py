"""Fixtures of the provider adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from polymodal.providers.base import ProviderContext
from polymodal.providers.http import Upstream


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[Upstream]:
    """One pooled client for the run, as the composition root shares one per process.
    Its aiohttp session is created lazily on first use, inside the session's event loop
    (``asyncio_default_test_loop_scope = "session"``), and closed in that loop here."""
    upstream = Upstream()
    try:
        yield upstream
    finally:
        await upstream.aclose()


@pytest.fixture
def context(http: Upstream) -> ProviderContext:
    return ProviderContext(http=http)
