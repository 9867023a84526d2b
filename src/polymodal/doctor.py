"""`polymodal doctor`: which backend each concern uses, and whether it answers."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from polymodal.cache import open_cache
from polymodal.db import migrate as migrations
from polymodal.db import rls_status
from polymodal.db.engine import create_engine
from polymodal.settings import Settings

Status = Literal["ok", "fail", "skip"]
CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    concern: str
    backend: str
    status: Status
    detail: str


async def _timed(work: Awaitable[str]) -> tuple[Status, str]:
    try:
        return "ok", await asyncio.wait_for(work, CHECK_TIMEOUT_S)
    except TimeoutError:
        return "fail", f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as e:  # the check reports; it never raises
        return "fail", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _writable(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder):
        pass
    return f"writable: {folder.resolve()}"


async def _database(settings: Settings) -> str:
    engine = create_engine(settings)
    try:
        current = await migrations.current_revision(engine)
    finally:
        await engine.dispose()
    head = migrations.head_revision()
    state = "up to date" if current == head else f"at {current or 'base'}, head is {head}"
    return f"reachable, schema {state}"


async def _isolation(settings: Settings) -> str:
    engine = create_engine(settings)
    try:
        return await rls_status.describe(engine)
    finally:
        await engine.dispose()


async def _cache(settings: Settings) -> str:
    cache = open_cache(settings)
    try:
        await cache.ping()
    finally:
        await cache.close()
    return "reachable" if settings.redis_url else "in this process"


async def _qdrant(url: str) -> str:
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
        response = await client.get(url.rstrip("/") + "/readyz")
        response.raise_for_status()
    return "reachable"


async def run_checks(settings: Settings) -> list[Check]:
    profile = settings.profile()
    results: list[Check] = []

    async def add(concern: str, backend: str, work: Awaitable[str]) -> None:
        status, detail = await _timed(work)
        results.append(Check(concern, backend, status, detail))

    await add("database", profile["database"], _database(settings))
    await add("isolation", "row-level security", _isolation(settings))
    await add("cache", profile["cache"], _cache(settings))
    jobs = _cache(settings) if settings.celery_ingest else _ok("in this process")
    await add("jobs", profile["jobs"], jobs)
    if settings.qdrant_url:
        await add("vectors", "qdrant-server", _qdrant(settings.qdrant_url))
    else:
        path = settings.embedded_index_path
        await add("vectors", profile["vectors"], _to_thread(_writable, path))
    if settings.storage_url.startswith("file://"):
        folder = Path(settings.storage_url.removeprefix("file://"))
        await add("objects", "local folder", _to_thread(_writable, folder))
    else:
        results.append(Check("objects", "s3", "skip", "S3 checks arrive with the media issue"))
    results.extend(_models(settings))
    return results


def _models(settings: Settings) -> list[Check]:
    """Which deployments can serve here: keys present, local model packages installed."""
    import os

    from polymodal import wiring

    try:
        providers = wiring.providers(settings, wiring.http_client(settings))
        catalog = wiring.catalog(settings, os.environ, providers)
        wiring.routes(settings, catalog)
    except ValueError as e:  # CatalogError / RoutesError: configuration mistakes
        return [Check("models", "catalog", "fail", str(e))]
    available = [d for d in catalog if d.available]
    checks = [
        Check(
            "models",
            "catalog",
            "ok" if available else "fail",
            f"{len(available)} of {len(catalog)} deployments available",
        )
    ]
    for d in catalog:
        if d.provider == "local":
            status: Status = "ok" if d.available else "fail"
            checks.append(Check("models", d.id, status, d.unavailable_reason or "installed"))
    return checks


async def _ok(detail: str) -> str:
    return detail


async def _to_thread(fn: Callable[[Path], str], folder: Path) -> str:
    return await asyncio.to_thread(fn, folder)
