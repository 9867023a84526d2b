"""Shared fixtures: one isolated database per backend per run, Redis under a run prefix.

Service-backed tests skip with a loud reason when the service is absent, except when
``CI`` is set: there a missing service fails the run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from polymodal.db import migrate as migrations
from polymodal.db.engine import create_engine, session_factory
from polymodal.settings import Settings

PG_URL = os.environ.get(
    "POLYMODAL_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("POLYMODAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN_ID = uuid.uuid4().hex[:10]
TEST_SECRET = "test-secret-" + "x" * 32


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def need_service(name: str, url: str, default_port: int) -> None:
    if _reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: service-backed tests may not skip in CI")
    pytest.skip(f"{message}: start it to run these tests (they never skip in CI)")


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "test",
        "secret_key": TEST_SECRET,
        "log_json": True,
        "access_log": False,
        # Limits stay on (every call passes through the limiter) but never bind: suites
        # share one tenant per module. tests/economics sets real plan limits.
        "plan_limits": {
            plan: {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}
            for plan in ("free", "pro", "enterprise")
        },
    }
    base.update(overrides)
    return Settings(**base)


async def _create_schema(name: str) -> None:
    engine = create_async_engine(PG_URL)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    await engine.dispose()


async def _drop_schema(name: str) -> None:
    engine = create_async_engine(PG_URL)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await engine.dispose()


class DatabaseTarget:
    """Settings for an empty, isolated database of one backend (schema or file)."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.tmp = tmp
        self.schema = f"pm_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"

    def settings(self, **overrides: Any) -> Settings:
        if self.backend == "sqlite":
            url = f"sqlite+aiosqlite:///{self.tmp / (self.schema + '.db')}"
            return make_settings(database_url=url, data_dir=self.tmp, **overrides)
        return make_settings(
            database_url=PG_URL, database_schema=self.schema, data_dir=self.tmp, **overrides
        )

    async def create(self) -> None:
        if self.backend == "postgres":
            await _create_schema(self.schema)

    async def drop(self) -> None:
        if self.backend == "postgres":
            await _drop_schema(self.schema)


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseTarget]:
    """A fresh, unmigrated database on each backend."""
    if request.param == "postgres":
        need_service("PostgreSQL", PG_URL, 5432)
    target = DatabaseTarget(request.param, tmp_path)
    await target.create()
    try:
        yield target
    finally:
        await target.drop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def migrated_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DatabaseTarget]:
    """One migrated database per backend, shared by the run (tests use fresh tenants)."""
    if request.param == "postgres":
        need_service("PostgreSQL", PG_URL, 5432)
    target = DatabaseTarget(request.param, tmp_path_factory.mktemp(request.param))
    await target.create()
    engine = create_engine(target.settings())
    await migrations.upgrade(engine)
    await engine.dispose()
    try:
        yield target
    finally:
        await target.drop()


@pytest.fixture
async def engine(migrated_db: DatabaseTarget) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(migrated_db.settings())
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", REDIS_URL, 6379)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"polymodal-test:{RUN_ID}:{uuid.uuid4().hex[:6]}:"
    yield prefix
    if _reachable(REDIS_URL, 6379):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test (CLI tests are sync)."""
    return asyncio.run(coro)
