"""A live polymodal server on PostgreSQL for the security tests (its own database, so
fuzzing cannot disturb the isolation suite's objects)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.isolation.conftest import IsoEnv, live_env


@pytest.fixture(scope="session")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsoEnv]:
    with live_env(tmp_path_factory.mktemp("security")) as env:
        yield env
